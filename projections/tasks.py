"""Tasks behind the read-path commands: project, replay, verify, and a balance or history
read from a store. Plain functions of the settings, no click: the CLI parses and renders
around them; process-wide switches (signals, GC, Arrow) stay with the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ledger.errors import RejectedError, UsageError
from ledger.health import Endpoint
from ledger.kafka import check_reachable
from ledger.settings import Settings
from ledger.topics import guard_topics
from ledger.wiring import build_projector
from projections.factory import open_duckdb, open_store, store_kind
from projections.identity import check_journal, journal_of
from projections.projector import Projector, ProjectorStats
from projections.replay import Progress, Replay, ReplayResult
from projections.store import AuditRow, JournalIdentity, ProjectionStore
from projections.verify import VerifyReport, verify

if TYPE_CHECKING:  # DuckDB, which a snapshot writes, is imported only where one is taken
    from projections.snapshot_requests import Snapshotter


def reach_journal(settings: Settings) -> JournalIdentity:
    """Refuse unusable topics; the journal the settings name."""
    admin = check_reachable(settings)
    guard_topics(settings, admin)
    return journal_of(settings, admin)


def projector_for(settings: Settings, store: ProjectionStore, journal: JournalIdentity, *,
                  reset: bool, until_caught_up: bool, batch_records: int, batch_ms: int,
                  snapshot_schedule: tuple[float, Path] | None) -> Projector:
    """A projector into `store` (wiped first with `reset`), taking the snapshots asked of
    it: on a schedule (seconds, file), and for `ledger snapshot` of a DuckDB store."""
    if reset:
        store.reset_projection(journal)
    return build_projector(settings, store, until_caught_up=until_caught_up,
                           batch_records=batch_records, batch_ms=batch_ms,
                           snapshots=_snapshotter(settings, store, snapshot_schedule))


def run_projector(projector: Projector, endpoint: Endpoint | None) -> ProjectorStats:
    """Run `projector` until it stops, serving its metrics at `endpoint` meanwhile."""
    from ledger.metrics import serve_projector_metrics

    metrics = serve_projector_metrics(projector, endpoint) if endpoint is not None else None
    try:
        return projector.run()
    finally:
        if metrics is not None:
            metrics.close()


def _snapshotter(settings: Settings, store: ProjectionStore,
                 schedule: tuple[float, Path] | None) -> Snapshotter | None:
    if schedule is None and store_kind(settings.store) != "duckdb":
        return None  # nothing to take: no schedule, and any process may read Postgres
    from projections.snapshot import check_out
    from projections.snapshot_requests import projector_snapshotter

    every, out = schedule if schedule is not None else (None, None)
    if out is not None:
        out = check_out(out, getattr(store, "path", None))
    return projector_snapshotter(settings.store, store, out=out, every_s=every,
                                 tuning=settings.tuning)


def replay_into(settings: Settings, out: str | None, *, as_of_ms: int | None,
                progress: Progress | None, reset: bool) -> tuple[ReplayResult, str]:
    """Rebuild --store (or the DuckDB file `out`) from offset zero; the result and the URL
    of the store rebuilt. The caller has reached the journal (reach_journal)."""
    with _open_target(settings, out) as store:
        result = Replay(settings, store, as_of=as_of_ms, progress=progress, reset=reset).run()
    return result, store.url


def _open_target(settings: Settings, out: str | None) -> ProjectionStore:
    if out is None:
        return open_store(settings.store)
    if not out.endswith(".duckdb"):
        raise UsageError(f"--out {out}: expected a FILE.duckdb")
    return open_duckdb(str(Path(out).resolve()))


def verify_store(settings: Settings) -> VerifyReport:
    """Verify --store against the journal it projects (refusing another journal's store)."""
    journal = reach_journal(settings)
    with open_store(settings.store, read_only=True) as store:
        check_journal(store, journal)
        return verify(settings, store)


def balance_of(settings: Settings, account: str) -> int:
    """An account's balance in --store; RejectedError if the store does not know it."""
    with open_store(settings.store, read_only=True) as store:
        row = store.balance(account)
        if row is None and store.account(account) is None:
            raise RejectedError(f"unknown account {account} in {store.url} "
                                "(not opened, or the projector is behind)")
    return row.balance if row is not None else 0


def history_of(settings: Settings, account: str, limit: int | None) -> list[AuditRow]:
    """An account's audit rows in --store, oldest first (the newest `limit` of them)."""
    with open_store(settings.store, read_only=True) as store:
        return store.history(account, limit)
