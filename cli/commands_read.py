"""The read path: `ledger project|replay|verify|balance|history|query`."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from cli.context import settings_of
from cli.options import (
    as_of_option,
    endpoint_options,
    json_option,
    query_timeout_option,
    reset_option,
    snapshot_schedule_options,
    summary_json_option,
)
from cli.render import PROGRESS_EVERY_S, dumps, moment, print_rows, print_table, progress_for
from ledger.errors import RejectedError, UsageError
from ledger.health import Endpoint
from ledger.kafka import check_reachable
from ledger.metrics import serve_projector_metrics
from ledger.settings import Settings
from ledger.topics import guard_topics
from projections.factory import open_duckdb, open_store, store_kind
from projections.identity import check_journal, journal_of
from projections.projector import Projector
from projections.query import run_query
from projections.replay import Replay
from projections.store import JournalIdentity, ProjectionStore
from projections.times import iso_ms, parse_as_of
from projections.verify import verify as verify_store

if TYPE_CHECKING:  # DuckDB, which a snapshot writes, is imported only where one is taken
    from projections.snapshot_requests import Snapshotter


def _reach_kafka(settings: Settings) -> JournalIdentity:
    """Refuse unusable topics; the journal the settings name."""
    admin = check_reachable(settings)
    guard_topics(settings, admin)
    return journal_of(settings, admin)


@click.command()
@click.option("--until-caught-up", is_flag=True,
              help="Stop once every assigned partition reached the end offsets taken at start.")
@click.option("--batch-records", type=click.IntRange(min=1), default=50_000, show_default=True,
              help="Most records per store transaction.")
@click.option("--batch-ms", type=click.IntRange(min=1), default=200, show_default=True,
              help="Longest time a batch collects records before it is written.")
@reset_option
@endpoint_options
@snapshot_schedule_options
@summary_json_option
@click.pass_context
def project(ctx: click.Context, until_caught_up: bool, batch_records: int,
            batch_ms: int, reset: bool, endpoint: Endpoint | None,
            snapshot_schedule: tuple[float, Path] | None, as_json: bool) -> None:
    """Project accounts and journal events into --store; resumes at the stored positions.

    Several projectors against one Postgres store share the partitions. A store projects
    one journal: another is refused (exit 2) unless --reset. A projector of a DuckDB store
    also takes the snapshots `ledger snapshot` asks it for."""
    settings = settings_of(ctx)
    journal = _reach_kafka(settings)
    started = time.monotonic()
    with open_store(settings.store) as store:
        if reset:
            store.reset_projection(journal)
        projector = Projector(settings, store, until_caught_up=until_caught_up,
                              batch_records=batch_records, batch_ms=batch_ms,
                              snapshots=_snapshotter(settings, store, snapshot_schedule))

        def on_term(_sig: int, _frame: FrameType | None) -> None:
            projector.stop()

        metrics = serve_projector_metrics(projector, endpoint) if endpoint is not None else None
        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            stats = projector.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
            if metrics is not None:
                metrics.close()
    elapsed = time.monotonic() - started
    if as_json:
        click.echo(dumps({"events": stats.events, "records": stats.records,
                          "dead_lettered": stats.dead_letters, "batches": stats.batches,
                          "seconds": round(elapsed, 3), "store": store.url}))
        return
    click.echo(f"projected {stats.events} events ({stats.records} records, "
               f"{stats.dead_letters} dead-lettered) in {stats.batches} batches, "
               f"{elapsed:.1f}s, into {store.url}")


def _snapshotter(settings: Settings, store: ProjectionStore,
                 schedule: tuple[float, Path] | None) -> Snapshotter | None:
    if schedule is None and store_kind(settings.store) != "duckdb":
        return None  # nothing to take: no schedule, and any process may read Postgres
    from projections.snapshot import check_out
    from projections.snapshot_requests import projector_snapshotter

    every, out = schedule if schedule is not None else (None, None)
    if out is not None:
        out = check_out(out, getattr(store, "path", None))
    return projector_snapshotter(settings.store, store, out=out, every_s=every)


@click.command()
@as_of_option
@click.option("--out", "out", metavar="FILE.duckdb", type=click.Path(dir_okay=False),
              help="Write a standalone DuckDB file instead; --store is left untouched.")
@click.option("--progress/--no-progress", default=None,
              help="Show progress on stderr: a bar on a terminal, else a log line every "
                   f"{PROGRESS_EVERY_S:g}s (default: the bar on a terminal, else the log "
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
    _reach_kafka(settings)
    started = time.monotonic()
    with _open_target(settings, out) as store:
        result = Replay(settings, store, as_of=as_of_ms, progress=progress_for("replay", progress),
                        reset=reset).run()
    elapsed = time.monotonic() - started
    if result.bad:
        click.echo(f"warning: {len(result.bad)} undecodable journal records left out; "
                   "`ledger verify` lists them", err=True)
    if as_json:
        click.echo(dumps({"events": result.events, "records": result.records,
                          "accounts": result.accounts, "checksum": result.checksum,
                          **moment("as_of", as_of_ms), "left_out_after_as_of": result.later,
                          "undecodable": len(result.bad), "seconds": round(elapsed, 3),
                          "events_per_s": round(result.events / max(elapsed, 1e-9)),
                          "store": store.url}))
        return
    when = f" as of {iso_ms(as_of_ms)}" if as_of_ms is not None else ""
    click.echo(f"replayed {result.events} events{when} ({result.accounts} accounts, "
               f"{result.events / max(elapsed, 1e-9):,.0f} events/s) into {store.url}; "
               f"checksum {result.checksum}")
    if result.later:
        click.echo(f"left out {result.later} events that occurred after {iso_ms(as_of_ms)}")


def _open_target(settings: Settings, out: str | None) -> ProjectionStore:
    if out is None:
        return open_store(settings.store)
    if not out.endswith(".duckdb"):
        raise UsageError(f"--out {out}: expected a FILE.duckdb")
    return open_duckdb(str(Path(out).resolve()))


@click.command()
@json_option
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Prove the store against the journal: invariants, checksum, diff; exit 1 on violations."""
    settings = settings_of(ctx)
    journal = _reach_kafka(settings)
    with open_store(settings.store, read_only=True) as store:
        check_journal(store, journal)
        report = verify_store(settings, store)
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        status = "OK" if report.ok else f"FAILED ({len(report.violations)} violations)"
        click.echo(f"verify {status}: {report.events} events, {report.accounts} accounts, "
                   f"checksum {report.checksum}")
        for v in report.violations:
            click.echo(f"  [{v.check}] {v.detail}")
    if not report.ok:
        ctx.exit(RejectedError.exit_code)


@click.command()
@click.argument("account")
@json_option
@click.pass_context
def balance(ctx: click.Context, account: str, as_json: bool) -> None:
    """Print the balance of ACCOUNT from the store."""
    with open_store(settings_of(ctx).store, read_only=True) as store:
        row = store.balance(account)
        if row is None and store.account(account) is None:
            raise RejectedError(f"unknown account {account} in {store.url} "
                                "(not opened, or the projector is behind)")
    amount = row.balance if row is not None else 0
    if as_json:
        click.echo(json.dumps({"account": account, "balance": amount}))
    else:
        click.echo(f"{account} {amount}")


@click.command()
@click.argument("account")
@json_option
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the newest N rows (still printed oldest first).")
@click.pass_context
def history(ctx: click.Context, account: str, as_json: bool, limit: int | None) -> None:
    """Print the audit rows of ACCOUNT, newest last."""
    with open_store(settings_of(ctx).store, read_only=True) as store:
        rows = store.history(account, limit)
    records = [{**moment("occurred_at", r.occurred_at), "kind": r.kind, "amount": r.amount,
                "account": r.account, "event_id": r.event_id, "command_id": r.command_id,
                "actor": r.actor, "reason": r.reason, "reverses_event_id": r.reverses_event_id,
                "partition": r.partition, "offset": r.offset} for r in rows]
    if as_json:
        for rec in records:
            click.echo(json.dumps(rec))
        return
    cols = ["occurred_at", "kind", "amount", "event_id", "actor", "reason"]
    print_table(cols, [[rec[c] for c in cols] for rec in records])


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
            print_rows(result.names, result.rows,
                       "json" if as_json else "csv" if as_csv else "table")


def register(group: click.Group) -> None:
    """Add the read-path commands to the `ledger` group."""
    for command in (project, replay, verify, balance, history, query):
        group.add_command(command)
