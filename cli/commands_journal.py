"""`ledger tail` and `ledger deadletters`: the journal and the dead-letter topic, decoded."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TypeVar

import click

from cli import render
from cli.context import settings_of
from cli.options import json_option, max_records_option, offset_option, partition_option
from ledger.deadletters import read_dead_letters
from ledger.errors import UsageError
from ledger.journal import read_journal
from ledger.wiring import codec

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
        click.echo(render.journal_json(record) if as_json else render.journal_text(record))


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
        click.echo(render.dead_letter_json(letter) if as_json
                   else render.dead_letter_text(letter))


def _first(items: Iterator[T], most: int | None) -> Iterator[T]:
    """At most `most` items; the reader (a generator: its consumer) closed when done."""
    try:
        yield from itertools.islice(items, most)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
