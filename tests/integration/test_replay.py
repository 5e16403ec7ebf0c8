"""`ledger replay`: from offset zero, into shadow tables, swapped in whole; --as-of; --out."""

from __future__ import annotations

import os
import random
import re
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger.errors import StoreError, UnknownFingerprintError
from ledger.settings import Settings
from ledger.wire import Codec
from ledger.wiring import build_projector
from projections.checksum import balance_checksum
from projections.factory import open_store
from projections.replay import Replay
from projections.sql_store import SqlProjectionStore
from projections.times import iso_ms
from tests.integration.journal_factory import (
    Journal,
    JournalWriter,
    audit_keys,
    expected_audit,
    fresh_pg_url,
    ledger_argv,
    make_events,
    make_journal,
    store_state,
    write_journal,
)

pytestmark = pytest.mark.integration
MakeSettings = Callable[..., Settings]


def extend(settings: Settings, journal: Journal, n: int, seed: int, users: int = 40) -> Journal:
    more = make_events(n, seed=seed, start_ms=journal.last_ms() + 1, users=users)
    full = Journal(journal.events + more, journal.accounts, coordinates=dict(journal.coordinates))
    with JournalWriter(settings) as w:
        w.transaction(w.event_records(more[: n // 2]))
        w.transaction(w.event_records(more[n // 2 :]), abort=True)
        w.transaction(w.event_records(more[n // 2 :]))
        w._record_coordinates(full)
    return full


def test_replay_rebuilds_exactly_and_the_projector_continues(
        make_settings: MakeSettings, store_url: str) -> None:
    settings = make_settings(partitions=3)
    journal = write_journal(settings, 2_500, txn_size=300)
    with open_store(store_url) as store:
        assert isinstance(store, SqlProjectionStore)
        build_projector(settings, store, until_caught_up=True).run()
        store.sql("UPDATE balances SET balance = balance + 1")  # damage to be repaired
        result = Replay(settings, store, batch_records=700).run()
        balances, rows = store_state(store)
        assert balances == journal.balances()
        assert audit_keys(rows) == expected_audit(journal, settings.topic("events"))
        assert result.checksum == balance_checksum(journal.balances().items())
        assert result.events == len(journal.events) and result.later == 0
        assert store.positions() == result.ends
        full = extend(settings, journal, 600, seed=4)
        build_projector(settings, store, until_caught_up=True).run()
        balances, rows = store_state(store)
        assert balances == full.balances() and max(rows.values()) == 1
        assert audit_keys(rows) == expected_audit(full, settings.topic("events"))


def test_readers_see_the_old_or_the_new_state_never_a_mix(
        make_settings: MakeSettings, store_url: str) -> None:
    settings = make_settings(partitions=3)
    journal = write_journal(settings, 3_000, txn_size=500)
    observed: list[tuple[int, ...]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with open_store(store_url) as store:
        assert isinstance(store, SqlProjectionStore)
        build_projector(settings, store, until_caught_up=True).run()
        old = snapshot(store)
        full = extend(settings, journal, 3_000, seed=21, users=90)  # new accounts too

        def read() -> None:
            with open_store(store_url) as reader:
                assert isinstance(reader, SqlProjectionStore)
                while not stop.is_set():
                    try:
                        observed.append(snapshot(reader))
                    except BaseException as e:  # recorded, asserted below
                        errors.append(e)
                        return

        thread = threading.Thread(target=read)
        thread.start()
        try:
            Replay(settings, store, batch_records=500).run()
            seen = len(observed)
            for _ in range(100):  # let the reader read the new state a few times
                if len(observed) > seen + 3 or errors:
                    break
                threading.Event().wait(0.05)
        finally:
            stop.set()
            thread.join(30)
        new = snapshot(store)
    assert not errors, errors
    users = sum(v for k, v in full.balances().items() if k.startswith("user:"))
    assert new[:4] == (len(full.balances()), 0, users, users)
    assert new[4] == sum(len(e["postings"]) for e in full.events)
    assert old[0] < new[0] and old[4] < new[4]
    assert set(observed) <= {old, new}, set(observed) - {old, new}
    assert old in observed and new in observed


def snapshot(store: SqlProjectionStore) -> tuple[int, ...]:
    """Accounts, sum of balances, user balances, user audit sum, audit rows, positions: read
    in ONE statement, so from one snapshot. Any mix of tables shows as a new combination."""
    (row,) = store.sql(
        "SELECT (SELECT count(*) FROM balances), "
        "(SELECT coalesce(sum(balance), 0) FROM balances), "
        "(SELECT coalesce(sum(balance), 0) FROM balances WHERE account LIKE 'user:%'), "
        "(SELECT coalesce(sum(amount), 0) FROM audit_log WHERE account LIKE 'user:%'), "
        "(SELECT count(*) FROM audit_log), "
        "(SELECT coalesce(sum(next_offset), 0) FROM projection_positions)")
    return tuple(int(v) for v in row)


def test_as_of_is_the_state_at_that_moment_and_out_leaves_the_store(
        make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(partitions=3)
    journal = make_journal(2_000, seed=31)
    rng = random.Random(1)
    rng.shuffle(journal.events)  # log order is not time order: as-of must filter by time
    with JournalWriter(settings) as w:
        w.write_journal(journal, txn_size=250)
    moment = sorted(e["occurred_at"] for e in journal.events)[1_234]
    out = tmp_path / "analyst.duckdb"
    default = tmp_path / "default.duckdb"
    run = subprocess.run(
        [*ledger_argv(settings, f"duckdb:///{default}"), "replay", "--as-of", iso_ms(moment),
         "--out", str(out), "--progress"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "events/s" in run.stderr and "left" in run.stderr  # the progress line
    assert not default.exists()
    upto = Journal([e for e in journal.events if e["occurred_at"] <= moment], journal.accounts,
                   coordinates=journal.coordinates)
    assert len(upto.events) == 1_235
    with open_store(f"duckdb:///{out}") as store:
        assert isinstance(store, SqlProjectionStore)
        balances, rows = store_state(store)
        assert balances == journal.balances(as_of=moment) == upto.balances()
        assert audit_keys(rows) == expected_audit(upto, settings.topic("events"))
        assert store.meta()["as_of"] == str(moment)
    refused = subprocess.run([*ledger_argv(settings, f"duckdb:///{out}"), "project"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--as-of" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_failed_replay_leaves_the_live_tables(make_settings: MakeSettings, store_url: str,
                                                codec: Codec) -> None:
    settings = make_settings(partitions=2)
    journal = write_journal(settings, 500, seed=61)
    with open_store(store_url) as store:
        assert isinstance(store, SqlProjectionStore)
        build_projector(settings, store, until_caught_up=True).run()
        before = store_state(store)
        alien = bytearray(codec.encode("event", journal.events[0]))
        alien[2:10] = bytes(8)
        with JournalWriter(settings) as w:
            w.transaction([(settings.topic("events"), b"user:u1", bytes(alien))])
        with pytest.raises(UnknownFingerprintError, match="unknown writer schema fingerprint"):
            Replay(settings, store, workers=1).run()
        assert store_state(store) == before
        with pytest.raises(UnknownFingerprintError):  # the in-process path too
            Replay(settings, store, workers=0).run()
        assert store_state(store) == before


def test_one_rebuild_at_a_time_on_postgres(postgres_url: str) -> None:
    url = fresh_pg_url(postgres_url)
    with open_store(url) as first, open_store(url) as second:
        first.begin_rebuild()
        with pytest.raises(StoreError, match="another replay"):
            second.begin_rebuild()
        first.abandon_rebuild()
        second.begin_rebuild()
        second.abandon_rebuild()


def test_a_replay_killed_mid_load_leaves_the_live_tables(make_settings: MakeSettings,
                                                         store_url: str) -> None:
    """kill -9 while the shadow tables load (one open transaction in DuckDB): the live
    tables are as before, and the next replay rebuilds them the same."""
    from bench.journal import Shape
    from bench.journal import write_journal as write_bench_journal

    settings = make_settings(partitions=3)
    write_bench_journal(settings, Shape.for_events(400_000, seed=7))
    with open_store(store_url) as store:
        assert isinstance(store, SqlProjectionStore)
        first = Replay(settings, store).run()
        before = (store.balance_checksum(), store.positions(), store.audit_summary())
    proc = subprocess.Popen([*ledger_argv(settings, store_url), "replay", "--progress"],
                            stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = b""
    while proc.poll() is None and not re.search(rb"replay +([1-8]\d|\d)\.\d%", seen):
        seen += os.read(proc.stderr.fileno(), 4096)
    assert proc.poll() is None, f"the replay ended before it could be killed: {seen[-300:]!r}"
    proc.kill()
    proc.wait()
    with open_store(store_url) as store:
        assert isinstance(store, SqlProjectionStore)
        assert (store.balance_checksum(), store.positions(), store.audit_summary()) == before
        again = Replay(settings, store).run()
        assert again.checksum == first.checksum and again.events == first.events == 400_000
        assert (store.balance_checksum(), store.positions(), store.audit_summary()) == before
