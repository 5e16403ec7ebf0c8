"""`ledger tail`: the decoded journal, like a console consumer."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from cli.context import settings_of
from cli.options import json_option
from ledger.journal import JournalRecord, read_journal
from ledger.wiring import codec


@click.command("tail")
@click.option("--from-beginning", is_flag=True, help="Start at offset zero, not at the end.")
@click.option(
    "--follow/--no-follow",
    default=True,
    show_default=True,
    help="Keep waiting for new events; --no-follow stops at the end.",
)
@json_option
@click.pass_context
def tail(ctx: click.Context, from_beginning: bool, follow: bool, as_json: bool) -> None:
    """Print committed journal events as they arrive."""
    records = read_journal(settings_of(ctx), codec(), from_beginning, follow)
    for record in records:
        click.echo(_json(record) if as_json else _text(record))


def _json(r: JournalRecord) -> str:
    base = {"partition": r.partition, "offset": r.offset, "key": r.key}
    if r.entry is None:
        return json.dumps({**base, "error": r.error})
    e = r.entry
    return json.dumps(
        {
            **base,
            "event_id": e.event_id,
            "command_id": e.command_id,
            "kind": str(e.kind),
            "postings": [{"account": p.account, "amount": p.amount} for p in e.postings],
            "occurred_at": e.occurred_at_ms,
            "actor": str(e.actor),
            "reason": e.reason,
            "reverses_event_id": e.reverses_event_id,
        }
    )


def _text(r: JournalRecord) -> str:
    if r.entry is None:
        return f"{r.partition}@{r.offset} UNDECODABLE {r.error}"
    e = r.entry
    when = datetime.fromtimestamp(e.occurred_at_ms / 1000, UTC).isoformat(timespec="milliseconds")
    postings = " ".join(f"{p.account}{p.amount:+d}" for p in e.postings)
    where = f"{r.partition}@{r.offset}"
    return f"{when} {where} {e.kind:<8} {postings}  [{e.actor}] {e.reason} {e.event_id}"
