"""`ledger tail` and `ledger deadletters`: the journal and the dead-letter topic, decoded."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, TypeVar

import click

from cli.context import settings_of
from cli.options import json_option, max_records_option, offset_option, partition_option
from cli.render import dumps, moment
from ledger.deadletters import DeadLetter, read_dead_letters
from ledger.errors import UsageError
from ledger.journal import JournalRecord, read_journal
from ledger.wiring import codec
from projections.times import iso_ms

T = TypeVar("T")


@click.command("tail")
@click.option("--from-beginning", is_flag=True, help="Start at offset zero, not at the end.")
@click.option(
    "--follow/--no-follow",
    default=True,
    show_default=True,
    help="Keep waiting for new events; --no-follow stops at the end.",
)
@partition_option
@offset_option
@max_records_option
@json_option
@click.pass_context
def tail(ctx: click.Context, from_beginning: bool, follow: bool, partitions: tuple[int, ...],
         offset: int | None, max_records: int | None, as_json: bool) -> None:
    """Print committed journal events as they arrive."""
    if from_beginning and offset is not None:
        raise UsageError("--from-beginning and --offset both say where to start: give one")
    records = read_journal(settings_of(ctx), codec(), from_beginning, follow,
                           partitions=partitions or None, offset=offset)
    for record in _first(records, max_records):
        click.echo(_json(record) if as_json else _text(record))


@click.command("deadletters")
@click.option(
    "--follow/--no-follow",
    default=False,
    show_default=True,
    help="Keep waiting for new dead letters once the existing ones are listed.",
)
@partition_option
@max_records_option
@json_option
@click.pass_context
def deadletters(ctx: click.Context, follow: bool, partitions: tuple[int, ...],
                max_records: int | None, as_json: bool) -> None:
    """List the dead-letter topic: each record with its origin (topic, partition, offset)
    and the error that sent it there."""
    letters = read_dead_letters(settings_of(ctx), follow, partitions or None)
    for letter in _first(letters, max_records):
        click.echo(dumps(_letter_json(letter)) if as_json else _letter_text(letter))


def _first(items: Iterator[T], most: int | None) -> Iterator[T]:
    """At most `most` items; the reader (a generator: its consumer) closed when done."""
    try:
        yield from itertools.islice(items, most)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _json(r: JournalRecord) -> str:
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


def _text(r: JournalRecord) -> str:
    if r.entry is None:
        return f"{r.partition}@{r.offset} UNDECODABLE {r.error}"
    e = r.entry
    postings = " ".join(f"{p.account}{p.amount:+d}" for p in e.postings)
    where = f"{r.partition}@{r.offset}"
    return (f"{iso_ms(e.occurred_at_ms)} {where} {e.kind:<8} {postings}  [{e.actor}] "
            f"{e.reason} {e.event_id}")


def _letter_json(d: DeadLetter) -> dict[str, Any]:
    return {"partition": d.partition, "offset": d.offset, **moment("timestamp", d.timestamp_ms),
            "source_topic": d.source_topic, "source_partition": d.source_partition,
            "source_offset": d.source_offset, "error": d.error, "key": d.key,
            "value_bytes": d.value_bytes, "headers": d.other_headers}


def _letter_text(d: DeadLetter) -> str:
    origin = f"{d.source_topic or '?'}[{_or_q(d.source_partition)}]@{_or_q(d.source_offset)}"
    extra = "".join(f" ({k}: {v})" for k, v in sorted(d.other_headers.items()))
    error = " ".join(d.error.split())
    return (f"{iso_ms(d.timestamp_ms)} {d.partition}@{d.offset} from {origin} "
            f"key {d.key!r}, {d.value_bytes} bytes: {error}{extra}")


def _or_q(value: int | None) -> str:
    return "?" if value is None else str(value)
