"""`ledger snapshot` of a DuckDB store, without Kafka: the file, its moment, incremental
snapshots and when they fall back to full ones, and a store held by a projector."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ledger.errors import StoreError, UsageError
from projections.factory import open_store
from projections.snapshot_requests import take_snapshot
from projections.snapshot_source import DuckDBReader, StoreLocked
from projections.store import JournalIdentity
from tests import views_fold as fold
from tests.integration.journal_factory import expected_balances

EVENTS = fold.demo_like_events(600)
FIRST = 560  # the rest is few enough for an incremental snapshot (snapshot_copy)
JOURNAL = JournalIdentity("demo", "cluster-1")
TABLES = {"accounts": "account", "balances": "account", "projection_positions": "topic",
          "audit_log": "event_id"}


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"duckdb:///{tmp_path / 'store.duckdb'}"
    with open_store(url) as store:
        store.claim_journal(JOURNAL)
        fold.fill_store(store, EVENTS[:FIRST])
    return url


def project_rest(url: str) -> None:
    project_rest_from(url, FIRST)


def project_rest_from(url: str, start: int) -> None:
    with open_store(url) as store:
        fold.fill_store(store, EVENTS, start=start)


def content(path: Path | str) -> dict[str, Counter[tuple[Any, ...]]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {t: Counter(con.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}
    finally:
        con.close()


def meta(path: Path) -> dict[str, str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return dict(con.execute("SELECT key, value FROM projection_meta").fetchall())
    finally:
        con.close()


def postings(events: list[dict[str, Any]]) -> int:
    return sum(len(e["postings"]) for e in events)


def test_a_snapshot_holds_the_store_its_moment_and_its_journal(url: str,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "snap.duckdb"
    result = take_snapshot(url, out)
    assert (result.mode, result.audit_rows) == ("full", postings(EVENTS[:FIRST]))
    assert content(out) == content(url.removeprefix("duckdb:///"))
    held, source = meta(out), meta(Path(url.removeprefix("duckdb:///")))
    assert (held["journal_prefix"], held["journal_cluster_id"]) == ("demo", "cluster-1")
    assert held["snapshot_of"] == source["store_id"] != held["store_id"]
    assert result.fallback == "no previous snapshot"
    assert held["snapshot_taken_at"] and held["snapshot_source"] == url
    con = duckdb.connect(str(out), read_only=True)
    try:
        daily = con.execute("SELECT account, day, balance, change, postings "
                            "FROM daily_balances").fetchall()
        (taken,) = {r[0] for r in con.execute("SELECT snapshot_taken_at FROM ledger_freshness")
                    .fetchall()}
    finally:
        con.close()
    assert {(a, d): (b, c, n) for a, d, b, c, n in daily} == fold.daily_balances(
        EVENTS[:FIRST])
    assert fold.as_ms(taken) == result.taken_at_ms
    assert not list(tmp_path.glob(".snap.duckdb*"))  # no temporary file left


def test_the_next_snapshot_adds_only_new_rows_and_an_open_reader_keeps_the_old_one(
        url: str, tmp_path: Path) -> None:
    out, full = tmp_path / "snap.duckdb", tmp_path / "full.duckdb"
    take_snapshot(url, out)
    old = duckdb.connect(str(out), read_only=True)
    try:
        project_rest(url)
        result = take_snapshot(url, out)
        assert result.mode == "incremental" and result.fallback == ""
        assert result.rows_added == postings(EVENTS[FIRST:])
        assert old.execute("SELECT count(*) FROM audit_log").fetchall() == [
            (postings(EVENTS[:FIRST]),)]
    finally:
        old.close()
    assert take_snapshot(url, full).mode == "full"
    assert content(out) == content(full) == content(url.removeprefix("duckdb:///"))
    again = take_snapshot(url, out)
    assert (again.mode, again.rows_added) == ("incremental", 0)


@pytest.mark.parametrize(("tamper", "reason"), [
    ("UPDATE projection_meta SET value = replace(value, '-', '+') "
     "WHERE key = 'snapshot_tails'", "no longer event"),
    ("DELETE FROM audit_log WHERE rowid = 7", "audit rows were changed"),
    ("UPDATE projection_meta SET value = 'other' WHERE key = 'snapshot_of'", "another store"),
    ("UPDATE projection_meta SET value = 'x' WHERE key = 'journal_prefix'", "another journal"),
    ("UPDATE projection_positions SET next_offset = next_offset + 100", "behind"),
])
def test_a_previous_snapshot_that_does_not_fit_gives_a_full_one(
        url: str, tmp_path: Path, tamper: str, reason: str) -> None:
    out = tmp_path / "snap.duckdb"
    take_snapshot(url, out)
    con = duckdb.connect(str(out))
    con.execute(tamper)
    con.close()
    project_rest(url)
    result = take_snapshot(url, out)
    assert result.mode == "full" and reason in result.fallback
    assert content(out) == content(url.removeprefix("duckdb:///"))


def test_a_snapshot_far_behind_is_replaced_by_a_copy_of_the_store(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'store.duckdb'}"
    with open_store(url) as store:
        fold.fill_store(store, EVENTS[:100])
    out = tmp_path / "snap.duckdb"
    take_snapshot(url, out)
    project_rest_from(url, 100)
    result = take_snapshot(url, out)
    assert result.mode == "full" and "copying the store costs less" in result.fallback
    assert content(out) == content(url.removeprefix("duckdb:///"))


def test_full_copies_everything_even_when_it_could_add(url: str, tmp_path: Path) -> None:
    out = tmp_path / "snap.duckdb"
    take_snapshot(url, out)
    result = take_snapshot(url, out, full=True)
    assert (result.mode, result.fallback, result.rows_added) == (
        "full", "", postings(EVENTS[:FIRST]))


def test_bad_outs_are_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"FILE\.duckdb"):
        take_snapshot(url, tmp_path / "snap.db")
    with pytest.raises(UsageError, match="is the store itself"):
        take_snapshot(url, Path(url.removeprefix("duckdb:///")))
    with pytest.raises(UsageError, match="no directory"):
        take_snapshot(url, tmp_path / "missing" / "snap.duckdb")
    stranger = tmp_path / "notes.duckdb"
    stranger.write_text("not a database")
    with pytest.raises(UsageError, match="not a DuckDB file"):
        take_snapshot(url, stranger)
    assert stranger.read_text() == "not a database"
    with pytest.raises(StoreError, match="no DuckDB store"):
        take_snapshot(f"duckdb:///{tmp_path / 'none.duckdb'}", tmp_path / "s.duckdb")


@pytest.fixture
def holder(url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[None]:
    """A process holding the store for writing; answering snapshot requests if asked."""
    stop = tmp_path / "STOP"
    args = [url.removeprefix("duckdb:///"), str(stop), *request.param]
    proc = subprocess.Popen([sys.executable, "-m", "tests.unit.store_holder", *args])
    try:
        while not (tmp_path / "READY").exists():
            assert proc.poll() is None, "the store holder exited"
            time.sleep(0.05)
        yield
    finally:
        stop.touch()
        assert proc.wait(60) == 0


@pytest.mark.parametrize("holder", [["--answer"]], indirect=True)
def test_the_process_holding_the_store_takes_the_snapshot_asked_of_it(
        url: str, tmp_path: Path, holder: None) -> None:
    out = tmp_path / "snap.duckdb"
    result = take_snapshot(url, out, timeout_s=120)
    assert result.mode == "full" and result.audit_rows == postings(EVENTS[:FIRST])
    with pytest.raises(StoreLocked):  # copying its file did not cost the holder its lock
        DuckDBReader.of_file(url.removeprefix("duckdb:///"), url)
    assert not list((tmp_path / "store.duckdb.snapshot-requests").glob("*.json"))
    again = take_snapshot(url, out, timeout_s=120)
    assert (again.mode, again.rows_added) == ("incremental", 0)
    balances = {a: b for a, b, *_ in content(out)["balances"]}
    assert balances == expected_balances(EVENTS[:FIRST])


@pytest.mark.parametrize("holder", [[]], indirect=True)
def test_a_store_held_by_a_process_that_takes_no_requests_is_an_error(
        url: str, tmp_path: Path, holder: None) -> None:
    with pytest.raises(StoreLocked, match="no projector took the snapshot request"):
        take_snapshot(url, tmp_path / "snap.duckdb", timeout_s=1)
    assert not list((tmp_path / "store.duckdb.snapshot-requests").glob("*.json"))
