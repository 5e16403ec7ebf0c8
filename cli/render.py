"""Output for people and scripts: each command's results as text or JSON, and progress.

Tables, CSV, timestamps and progress lines are made here too.

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
from typing import TYPE_CHECKING, Any

import click

from ledger.settings import Tuning
from projections.times import iso_ms

if TYPE_CHECKING:  # the results rendered; their modules load with the commands that use them
    from ledger.deadletters import DeadLetter
    from ledger.journal import JournalRecord
    from ledger.records import Outcome
    from ledger.topics import TopicState
    from projections.export import ExportResult
    from projections.projector import ProjectorStats
    from projections.replay import ReplayResult
    from projections.snapshot import SnapshotResult
    from projections.store import AuditRow
    from projections.verify import VerifyReport

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


def progress(label: str, terminal: bool,
             every_s: float = Tuning.progress_every_s) -> Callable[[int, int], None]:
    """A progress callback: on a terminal one self-overwriting line, 4 times a second;
    elsewhere (a pipe, a container's log) a log line at first, every `every_s`, and at
    the end."""
    started = time.monotonic()
    last = [float("-inf")]  # the first call shows: early proof of life
    every = 0.25 if terminal else every_s

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


def progress_for(label: str, wanted: bool | None,
                 every_s: float = Tuning.progress_every_s) -> Callable[[int, int], None] | None:
    """The progress callback --progress/--no-progress asks for. By default: the bar on a
    terminal, log lines at INFO elsewhere (shown at -v or LEDGER_LOG_LEVEL=INFO);
    --progress shows the log lines whatever the level."""
    if wanted is False:
        return None
    terminal = sys.stderr.isatty()
    if wanted and not terminal:
        PROGRESS_LOG.setLevel(logging.INFO)
    return progress(label, terminal, every_s)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# --- the results of commands --------------------------------------------------------------


def submitted(command_id: str, as_json: bool) -> None:
    """A write sent without --wait."""
    click.echo(dumps({"command_id": command_id, "status": "submitted"}) if as_json
               else f"submitted {command_id}")


def unknown_outcome(command_id: str) -> None:
    """A write sent whose outcome did not come within --timeout (JSON only: the error line
    says the rest)."""
    click.echo(dumps({"command_id": command_id, "status": "unknown"}))


def outcome(result: Outcome, as_json: bool) -> None:
    """A write's outcome (--wait)."""
    if as_json:
        click.echo(dumps(result.to_json()))
    elif result.accepted:
        click.echo(f"accepted {result.command_id} events {' '.join(result.event_ids) or '-'}")
    else:
        click.echo(f"rejected {result.command_id}: {result.reason}: {result.detail}")


def projected(stats: ProjectorStats, seconds: float, url: str, as_json: bool) -> None:
    """What a projector did before it stopped."""
    if as_json:
        click.echo(dumps({"events": stats.events, "records": stats.records,
                          "dead_lettered": stats.dead_letters, "batches": stats.batches,
                          "seconds": round(seconds, 3), "store": url}))
        return
    click.echo(f"projected {stats.events} events ({stats.records} records, "
               f"{stats.dead_letters} dead-lettered) in {stats.batches} batches, "
               f"{seconds:.1f}s, into {url}")


def replayed(result: ReplayResult, as_of_ms: int | None, seconds: float, url: str,
             as_json: bool) -> None:
    """A replay's summary (and a warning on stderr for undecodable records)."""
    if result.bad:
        click.echo(f"warning: {len(result.bad)} undecodable journal records left out; "
                   "`ledger verify` lists them", err=True)
    if as_json:
        click.echo(dumps({"events": result.events, "records": result.records,
                          "accounts": result.accounts, "checksum": result.checksum,
                          **moment("as_of", as_of_ms), "left_out_after_as_of": result.later,
                          "undecodable": len(result.bad), "seconds": round(seconds, 3),
                          "events_per_s": round(result.events / max(seconds, 1e-9)),
                          "store": url}))
        return
    when = f" as of {iso_ms(as_of_ms)}" if as_of_ms is not None else ""
    click.echo(f"replayed {result.events} events{when} ({result.accounts} accounts, "
               f"{result.events / max(seconds, 1e-9):,.0f} events/s) into {url}; "
               f"checksum {result.checksum}")
    if result.later:
        click.echo(f"left out {result.later} events that occurred after {iso_ms(as_of_ms)}")


def verified(report: VerifyReport, as_json: bool) -> None:
    """A verification's report, each violation on its own line."""
    if as_json:
        click.echo(dumps(report.as_json()))
        return
    status = "OK" if report.ok else f"FAILED ({len(report.violations)} violations)"
    click.echo(f"verify {status}: {report.events} events, {report.accounts} accounts, "
               f"checksum {report.checksum}")
    for v in report.violations:
        click.echo(f"  [{v.check}] {v.detail}")


def balance(account: str, amount: int, as_json: bool) -> None:
    click.echo(dumps({"account": account, "balance": amount}) if as_json
               else f"{account} {amount}")


HISTORY_COLUMNS = ["occurred_at", "kind", "amount", "event_id", "actor", "reason"]


def history(rows: list[AuditRow], as_json: bool) -> None:
    """An account's audit rows: JSON lines, or a table of the columns people read."""
    records = [{**moment("occurred_at", r.occurred_at), "kind": r.kind, "amount": r.amount,
                "account": r.account, "event_id": r.event_id, "command_id": r.command_id,
                "actor": r.actor, "reason": r.reason, "reverses_event_id": r.reverses_event_id,
                "partition": r.partition, "offset": r.offset} for r in rows]
    if as_json:
        for rec in records:
            click.echo(dumps(rec))
        return
    print_table(HISTORY_COLUMNS, [[rec[c] for c in HISTORY_COLUMNS] for rec in records])


def snapshot(result: SnapshotResult, as_json: bool) -> None:
    """What a snapshot holds and how it was taken."""
    if as_json:
        fields = result.as_json()
        fields.pop("taken_at_ms")
        click.echo(dumps({**fields, **moment("taken_at", result.taken_at_ms)}))
        return
    behind = ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(result.positions.items())
                       if t.endswith(".events"))
    how = result.mode + (f" ({result.fallback})" if result.fallback else "")
    click.echo(f"snapshot {result.out}: {how}, {result.audit_rows} audit rows "
               f"({result.rows_added} new), {result.accounts} accounts, "
               f"{result.seconds:.1f}s; reflects {behind or 'no events'}")


def exported(result: ExportResult, fmt: str, as_of_ms: int | None, as_json: bool) -> None:
    """An export's files and row counts."""
    tables = result.manifest["tables"]
    if as_json:
        click.echo(dumps({"out": result.out, "format": fmt, **moment("as_of", as_of_ms),
                          "rows": {name: t["rows"] for name, t in tables.items()},
                          "files": sum(len(t["files"]) for t in tables.values()),
                          "balance_checksum": result.manifest["balance_checksum"],
                          "seconds": round(result.seconds, 3),
                          "rows_per_s": round(result.rows / max(result.seconds, 1e-9))}))
        return
    counts = ", ".join(f"{t['rows']} {name} rows" for name, t in tables.items())
    click.echo(f"exported {counts} to {result.out} in {result.seconds:.1f}s; balance checksum "
               f"{result.manifest['balance_checksum']}")


def journal_json(r: JournalRecord) -> str:
    """A journal record as `ledger tail --json` prints it (an undecodable one: its error)."""
    base = {"partition": r.partition, "offset": r.offset, "key": r.key}
    if r.entry is None:
        return dumps({**base, "error": r.error})
    e = r.entry
    return dumps(
        {
            **base,
            "event_id": e.event_id,
            "command_id": e.command_id,
            "kind": str(e.kind),
            "postings": [{"account": p.account, "amount": p.amount} for p in e.postings],
            **moment("occurred_at", e.occurred_at_ms),
            "actor": str(e.actor),
            "reason": e.reason,
            "reverses_event_id": e.reverses_event_id,
        }
    )


def journal_text(r: JournalRecord) -> str:
    if r.entry is None:
        return f"{r.partition}@{r.offset} UNDECODABLE {r.error}"
    e = r.entry
    postings = " ".join(f"{p.account}{p.amount:+d}" for p in e.postings)
    where = f"{r.partition}@{r.offset}"
    return (f"{iso_ms(e.occurred_at_ms)} {where} {e.kind:<8} {postings}  [{e.actor}] "
            f"{e.reason} {e.event_id}")


def dead_letter_json(d: DeadLetter) -> str:
    return dumps({"partition": d.partition, "offset": d.offset,
                  **moment("timestamp", d.timestamp_ms), "source_topic": d.source_topic,
                  "source_partition": d.source_partition, "source_offset": d.source_offset,
                  "error": d.error, "key": d.key, "value_bytes": d.value_bytes,
                  "headers": d.other_headers})


def dead_letter_text(d: DeadLetter) -> str:
    origin = f"{d.source_topic or '?'}[{_or_q(d.source_partition)}]@{_or_q(d.source_offset)}"
    extra = "".join(f" ({k}: {v})" for k, v in sorted(d.other_headers.items()))
    error = " ".join(d.error.split())
    return (f"{iso_ms(d.timestamp_ms)} {d.partition}@{d.offset} from {origin} "
            f"key {d.key!r}, {d.value_bytes} bytes: {error}{extra}")


def _or_q(value: int | None) -> str:
    return "?" if value is None else str(value)


TOPIC_CONFIGS = ("cleanup.policy", "retention.ms", "retention.bytes", "min.insync.replicas")


def topic(spec: TopicState, as_json: bool) -> None:
    """A topic's partitions, replication and the configs that matter."""
    shown = {k: spec.configs.get(k) for k in TOPIC_CONFIGS}
    if as_json:
        click.echo(dumps({"topic": spec.name, "partitions": spec.partitions,
                          "replication_factor": spec.replication_factor, "configs": shown}))
        return
    conf = " ".join(f"{k}={v}" for k, v in shown.items())
    click.echo(f"{spec.name:<24} partitions={spec.partitions} rf={spec.replication_factor} {conf}")
