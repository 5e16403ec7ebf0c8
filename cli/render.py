"""Output for people and scripts: tables, JSON lines, CSV, timestamps and progress.

Every timestamp in JSON output is ISO-8601 UTC with milliseconds
("2026-12-05T12:00:00.123Z"); a value that is epoch milliseconds keeps that form in
a `*_ms` field beside it.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any

import click

from projections.times import iso_ms

PROGRESS_EVERY_S = 5.0  # a progress log line this often when stderr is not a terminal
PROGRESS_LOG = logging.getLogger("ledger.progress")
CONTROL = {i: f"\\x{i:02x}" for i in range(32)} | {9: "\\t", 10: "\\n", 13: "\\r"}


def iso(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds; a datetime without zone is UTC (as in the stores)."""
    moment = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def json_default(value: Any) -> Any:
    """json.dumps(default=...): timestamps as `iso`, dates ISO, anything else as text."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=json_default)


def moment(name: str, ms: int | None) -> dict[str, Any]:
    """An epoch-ms field as the pair {name: ISO, name_ms: ms} (None for both if None)."""
    return {name: iso_ms(ms) if ms is not None else None, f"{name}_ms": ms}


def print_table(names: list[str], rows: list[list[Any]]) -> None:
    """Rows as aligned columns under a header; numbers right-aligned."""
    text = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(n), *(len(r[i]) for r in text)]) for i, n in enumerate(names)]
    numeric = [bool(rows) and all(isinstance(r[i], int | float) for r in rows if r[i] is not None)
               for i in range(len(names))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(cells, widths, numeric, strict=True)).rstrip()

    click.echo(line(names))
    click.echo(line(["-" * w for w in widths]))
    for r in text:
        click.echo(line(r))


def print_rows(names: list[str], rows: Iterable[tuple[Any, ...]], fmt: str) -> None:
    """Rows as a table, JSON lines or CSV (fmt: table, json, csv)."""
    if fmt == "table":
        print_table(names, [[iso(v) if isinstance(v, datetime) else v for v in r] for r in rows])
    elif fmt == "json":
        for r in rows:
            click.echo(dumps(dict(zip(names, r, strict=True))))
    else:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(names)
        for r in rows:
            out.writerow(["" if v is None else iso(v) if isinstance(v, datetime) else v
                          for v in r])


def _cell(value: Any) -> str:
    """A value on one line: control characters (tabs, newlines) shown escaped."""
    return "" if value is None else str(value).translate(CONTROL)


def progress(label: str, terminal: bool) -> Callable[[int, int], None]:
    """A progress callback: on a terminal one self-overwriting line, 4 times a second;
    elsewhere (a pipe, a container's log) a log line at first, every PROGRESS_EVERY_S, and
    at the end."""
    started = time.monotonic()
    last = [float("-inf")]  # the first call shows: early proof of life
    every = 0.25 if terminal else PROGRESS_EVERY_S

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < every and done < total:
            return
        last[0] = now
        rate = done / max(now - started, 1e-9)
        left = _clock((total - done) / rate if rate > 0 else 0.0)
        pct = 100 * done / total if total else 100.0
        if not terminal:
            PROGRESS_LOG.info("%s %.1f%% %s/%s records, %s events/s, left %s", label, pct,
                              f"{done:,}", f"{total:,}", f"{rate:,.0f}", left)
            return
        width = 30
        filled = int(width * pct / 100)
        line = (f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {pct:5.1f}% "
                f"{done:,}/{total:,}  {rate:,.0f} events/s  left {left}  ")
        click.echo(line + ("\n" if done >= total else ""), err=True, nl=False)

    return show


def progress_for(label: str, wanted: bool | None) -> Callable[[int, int], None] | None:
    """The progress callback --progress/--no-progress asks for. By default: the bar on a
    terminal, log lines at INFO elsewhere (shown at -v or LEDGER_LOG_LEVEL=INFO);
    --progress shows the log lines whatever the level."""
    if wanted is False:
        return None
    terminal = sys.stderr.isatty()
    if wanted and not terminal:
        PROGRESS_LOG.setLevel(logging.INFO)
    return progress(label, terminal)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
