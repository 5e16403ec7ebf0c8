"""`ledger snapshot` and `project --snapshot-every` against a real broker and database,
while a projector runs: every snapshot's rows are exactly the journal's events before the
positions it records, its balances their fold."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ledger.settings import Settings
from projections.snapshot_requests import take_snapshot
from tests import views_fold as fold
from tests.integration.journal_factory import (
    Journal,
    JournalWriter,
    expected_balances,
    fresh_pg_url,
    ledger_argv,
    make_journal,
)

pytestmark = pytest.mark.integration
MakeSettings = Callable[..., Settings]
DEADLINE_S = 180


@contextmanager
def projector(settings: Settings, store: str, log: Path, *extra: str) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(ledger_argv(settings, store, "-v", "project", *extra),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        until(lambda: {} if "projector assigned" in log.read_text() else None)
        yield
        assert proc.poll() is None, log.read_text()[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-2000:]


def snapshot_cli(settings: Settings, store: str, out: Path, *extra: str) -> dict[str, Any]:
    done = subprocess.run(ledger_argv(settings, store, "snapshot", "--out", str(out), "--json",
                                      *extra), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def snapshot_with(settings: Settings, store: str, out: Path,
                  rows: int) -> Callable[[], dict[str, Any] | None]:
    """A check for `until`: a snapshot, if it holds that many audit rows."""
    def check() -> dict[str, Any] | None:
        result = snapshot_cli(settings, store, out)
        return result if result["audit_rows"] == rows else None

    return check


def postings(journals: list[Journal]) -> int:
    return sum(len(e["postings"]) for j in journals for e in j.events)


def until(check: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        got = check()
        if got is not None:
            return got
        time.sleep(0.3)
    raise AssertionError("not caught up in time")


def included(journals: list[Journal], events_topic: str,
             positions: dict[tuple[str, int], int]) -> list[dict[str, Any]]:
    """The events of journals a store at these positions holds."""
    return [e for j in journals for e in j.events
            if j.coordinates[e["event_id"]][1] < positions.get(
                (events_topic, j.coordinates[e["event_id"]][0]), 0)]


def snapshot_state(out: Path) -> tuple[dict[str, int], Counter[tuple[str, str, int]],
                                       dict[tuple[str, int], int]]:
    con = duckdb.connect(str(out), read_only=True)
    try:
        balances = dict(con.execute("SELECT account, balance FROM balances").fetchall())
        audit = Counter(con.execute("SELECT event_id, account, amount FROM audit_log")
                        .fetchall())
        positions = {(t, p): o for t, p, o in con.execute(
            'SELECT topic, "partition", next_offset FROM projection_positions').fetchall()}
    finally:
        con.close()
    return balances, audit, positions


def assert_is_the_journal_at_its_positions(out: Path, journals: list[Journal],
                                           settings: Settings) -> int:
    """The snapshot holds exactly the events before its positions; their count."""
    balances, audit, positions = snapshot_state(out)
    events = included(journals, settings.topic("events"), positions)
    assert audit == Counter((e["event_id"], p["account"], p["amount"])
                            for e in events for p in e["postings"])
    assert balances == expected_balances(events)
    return len(events)


def test_snapshots_of_a_duckdb_store_while_its_projector_runs(
        make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(partitions=3)
    # "more" is a few % of "first": its snapshot adds rows (a copy would cost more past 10%)
    first, more = make_journal(2000, seed=3), make_journal(100, seed=4)
    out = tmp_path / "snap.duckdb"
    with JournalWriter(settings) as writer, \
            projector(settings, settings.store, tmp_path / "project.log"):
        writer.write_journal(first, txn_size=200)
        taken = until(snapshot_with(settings, settings.store, out, postings([first])))
        assert f"snapshot {out}: full" in (tmp_path / "project.log").read_text()  # it took it
        assert_is_the_journal_at_its_positions(out, [first], settings)
        con = duckdb.connect(str(out), read_only=True)
        daily = con.execute("SELECT account, day, balance, change, postings "
                            "FROM daily_balances").fetchall()
        assert {(a, d): (b, c, n) for a, d, b, c, n in daily} == fold.daily_balances(
            first.events)
        try:  # an analyst reading the old file while new snapshots replace it
            writer.write_journal(more, txn_size=100)
            again = until(snapshot_with(settings, settings.store, out,
                                        postings([first, more])))
            assert con.execute("SELECT count(*) FROM audit_log").fetchall() == [
                (taken["audit_rows"],)]
        finally:
            con.close()
        assert again["mode"] == "incremental"
        assert again["taken_at_ms"] > taken["taken_at_ms"]
        assert_is_the_journal_at_its_positions(out, [first, more], settings)
    # The projector stopped: the command reads the store itself.
    last = snapshot_cli(settings, settings.store, out)
    assert (last["mode"], last["rows_added"]) == ("incremental", 0)
    assert not list(Path(settings.store.removeprefix("duckdb:///") + ".snapshot-requests")
                    .glob("*.json"))


def test_snapshots_of_postgres_agree_with_their_positions_while_the_projector_writes(
        make_settings: MakeSettings, postgres_url: str, tmp_path: Path) -> None:
    store = fresh_pg_url(postgres_url)
    settings = make_settings(partitions=3, store=store)
    journals = [make_journal(800, seed=10)]
    out = tmp_path / "pg.duckdb"
    with JournalWriter(settings) as writer, \
            projector(settings, store, tmp_path / "project.log", "--batch-records", "300"):
        writer.write_journal(journals[0], txn_size=100)
        seen = []
        for seed in range(11, 15):  # snapshots while batches commit
            journals.append(make_journal(300, seed=seed))
            writer.write_journal(journals[-1], txn_size=50)
            take_snapshot(store, out)
            seen.append(assert_is_the_journal_at_its_positions(out, journals, settings))
        until(lambda: {} if take_snapshot(store, out).audit_rows == postings(journals)
              else None)
    assert assert_is_the_journal_at_its_positions(out, journals, settings) == sum(
        len(j.events) for j in journals)
    assert seen == sorted(seen) and seen[-1] > 0


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_the_projector_takes_a_snapshot_every_interval(
        make_settings: MakeSettings, postgres_url: str, tmp_path: Path, kind: str) -> None:
    store = (fresh_pg_url(postgres_url) if kind == "postgres"
             else f"duckdb:///{tmp_path / 'live.duckdb'}")
    settings = make_settings(partitions=2, store=store)
    journal = make_journal(500, seed=21)
    out = tmp_path / "every.duckdb"

    def complete() -> dict[str, Any] | None:
        if not out.exists():
            return None
        try:
            con = duckdb.connect(str(out), read_only=True)
        except duckdb.Error:
            return None  # being renamed over right now
        try:
            (n,), = con.execute("SELECT count(*) FROM audit_log").fetchall()
        finally:
            con.close()
        return {} if n == postings([journal]) else None

    with JournalWriter(settings) as writer, projector(
            settings, store, tmp_path / "project.log", "--snapshot-every", "1s",
            "--snapshot-out", str(out)):
        writer.write_journal(journal, txn_size=100)
        until(complete)
    assert assert_is_the_journal_at_its_positions(out, [journal], settings) == 500


def test_bad_snapshot_arguments_are_one_line_usage_errors(make_settings: MakeSettings,
                                                         tmp_path: Path) -> None:
    settings = make_settings(create=False)
    for args in (["snapshot", "--out", str(tmp_path / "x.txt")],
                 ["project", "--snapshot-every", "1m"],
                 ["project", "--snapshot-every", "soon", "--snapshot-out",
                  str(tmp_path / "s.duckdb")]):
        done = subprocess.run(ledger_argv(settings, settings.store, *args), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
