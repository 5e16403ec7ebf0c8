"""The read path: `ledger replay|verify|balance|history|query`."""

from __future__ import annotations

import time

import click

from cli import render
from cli.context import settings_of
from cli.exits import finish
from cli.options import (
    as_of_option,
    json_option,
    query_timeout_option,
    reset_option,
    summary_json_option,
)
from cli.process import bulk_read_settings
from cli.render import progress_for
from ledger.errors import ExitCode
from ledger.settings import Tuning
from projections.query import run_query
from projections.tasks import balance_of, history_of, reach_journal, replay_into, verify_store
from projections.times import parse_as_of


@click.command()
@as_of_option
@click.option("--out", "out", metavar="FILE.duckdb", type=click.Path(dir_okay=False),
              help="Write a standalone DuckDB file instead; --store is left untouched.")
@click.option("--progress/--no-progress", default=None,
              help="Show progress on stderr: a bar on a terminal, else a log line every "
                   f"{Tuning.progress_every_s:g}s (default: the bar on a terminal, else the log "
                   "lines at INFO).")
@reset_option
@summary_json_option
@click.pass_context
def replay(ctx: click.Context, as_of: str | None, out: str | None,
           progress: bool | None, reset: bool, as_json: bool) -> None:
    """Rebuild from offset zero into shadow tables, check them, swap them in atomically.

    A store projects one journal: another is refused (exit 2) unless --reset."""
    settings = settings_of(ctx)
    as_of_ms = parse_as_of(as_of) if as_of is not None else None
    reach_journal(settings)
    started = time.monotonic()
    with bulk_read_settings():
        result, url = replay_into(settings, out, as_of_ms=as_of_ms, reset=reset,
                                  progress=progress_for("replay", progress,
                                                        settings.tuning.progress_every_s))
    render.replayed(result, as_of_ms, time.monotonic() - started, url, as_json)


@click.command()
@json_option
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Prove the store against the journal: invariants, checksum, diff; exit 1 on violations."""
    report = verify_store(settings_of(ctx))
    render.verified(report, as_json)
    if not report.ok:
        finish(ExitCode.REJECTED)


@click.command()
@click.argument("account")
@json_option
@click.pass_context
def balance(ctx: click.Context, account: str, as_json: bool) -> None:
    """Print the balance of ACCOUNT from the store."""
    render.balance(account, balance_of(settings_of(ctx), account), as_json)


@click.command()
@click.argument("account")
@json_option
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the newest N rows (still printed oldest first).")
@click.pass_context
def history(ctx: click.Context, account: str, as_json: bool, limit: int | None) -> None:
    """Print the audit rows of ACCOUNT, newest last."""
    render.history(history_of(settings_of(ctx), account, limit), as_json)


@click.command()
@click.argument("sql")
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
@query_timeout_option
@click.pass_context
def query(ctx: click.Context, sql: str, as_json: bool, as_csv: bool, timeout: float) -> None:
    """Run one read-only SQL statement over --store (e.g. "SELECT * FROM balances").

    It reads the store and nothing else: no files, ATTACH, extensions or settings. On
    Postgres it runs in a READ ONLY transaction and refuses a role that is a superuser or
    may read or write the server's files (see the README)."""
    with run_query(settings_of(ctx).store, sql, timeout) as result:
        if result.names:
            render.print_rows(result.names, result.rows,
                              "json" if as_json else "csv" if as_csv else "table")


def register(group: click.Group) -> None:
    """Add the read-path commands to the `ledger` group."""
    for command in (replay, verify, balance, history, query):
        group.add_command(command)
