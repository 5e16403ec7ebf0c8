"""Postgres stops during projection: the projector retries with backoff, says so, and
resumes exactly when the database returns."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import devstack
from devstack import postgres as dpg
from ledger.settings import Settings
from projections.factory import open_store
from projections.sql_store import SqlProjectionStore
from tests.integration.journal_factory import (
    JournalWriter,
    audit_keys,
    ledger_argv,
    make_journal,
    store_state,
)
from tests.integration.stacks import OUTAGE_PG

pytestmark = pytest.mark.integration


@pytest.fixture
def private_pg(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A Postgres of this test's own, which it may stop and start."""
    home = tmp_path / "pg-home"
    port = dpg.up(home, port=OUTAGE_PG.first).port
    yield home, port
    devstack.down(home, wipe=True)


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_projector_waits_out_a_database_outage(
    make_settings: Callable[..., Settings], private_pg: tuple[Path, int], tmp_path: Path
) -> None:
    home, port = private_pg
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/ledger"
    settings = make_settings(partitions=3)
    journal = make_journal(6_000, seed=9)
    half = len(journal.events) // 2
    log = tmp_path / "project.log"
    writer = JournalWriter(settings)
    writer.transaction(writer.account_records(journal.accounts))
    writer.transaction(writer.event_records(journal.events[:half]))
    with log.open("wb") as out:
        proc = subprocess.Popen([*ledger_argv(settings, url, "-v"), "project",
                                 "--batch-ms", "50"], stdout=out, stderr=out)
    try:
        _wait_for(lambda: "batch 1:" in log.read_text(), 60, "projector never committed")
        devstack.down(home)  # the outage: Postgres stops under a running projector
        writer.transaction(writer.event_records(journal.events[half:]))
        _wait_for(lambda: "store unavailable" in log.read_text(), 60, log.read_text()[-2000:])
        time.sleep(2)  # a few backoff rounds against a database that is down
        assert proc.poll() is None, "the projector died during the outage"
        dpg.up(home, port=port)
        _wait_for(lambda: "is back" in log.read_text(), 60, log.read_text()[-2000:])
        _wait_for(lambda: _projected(url) == len(journal.events), 60, "did not catch up")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        writer.close()
    with open_store(url) as store:
        assert isinstance(store, SqlProjectionStore)
        balances, rows = store_state(store)
    assert balances == journal.balances()
    postings = Counter((e["event_id"], p["account"], p["amount"])
                       for e in journal.events for p in e["postings"])
    assert Counter(k[:3] for k in audit_keys(rows).elements()) == postings
    assert max(rows.values()) == 1  # no row twice


def _projected(url: str) -> int:
    with open_store(url) as store:
        assert isinstance(store, SqlProjectionStore)
        return len({r[0] for r in store.sql("SELECT DISTINCT event_id FROM audit_log")})
