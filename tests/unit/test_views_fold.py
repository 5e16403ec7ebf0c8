"""The analysts' views of a DuckDB store equal plain-Python folds of the journal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from projections.factory import open_store
from projections.sql_store import SqlProjectionStore
from projections.views import VIEWS
from tests import views_fold as fold

EVENTS = fold.demo_like_events()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlProjectionStore]:
    s = open_store(f"duckdb:///{tmp_path / 'views.duckdb'}")
    assert isinstance(s, SqlProjectionStore)
    with s:
        fold.fill_store(s, EVENTS)
        yield s


def test_the_journal_spans_weeks_with_quiet_days_and_every_kind() -> None:
    days = {fold.day_of(e["occurred_at"]) for e in EVENTS}
    assert len(days) >= 14
    assert {e["kind"] for e in EVENTS} == {"GRANTED", "EARNED", "SPENT", "JOINED", "REVERSED"}
    quiet = [k for k, (_, change, n) in fold.daily_balances(EVENTS).items() if n == 0]
    assert quiet, "no account has a day without postings: carrying forward is untested"


def test_daily_balances_carry_each_balance_through_days_without_postings(
        store: SqlProjectionStore) -> None:
    rows = store.sql("SELECT account, day, balance, change, postings FROM daily_balances")
    got = {(a, d): (b, c, n) for a, d, b, c, n in rows}
    assert len(got) == len(rows)  # one row per account and day
    assert got == fold.daily_balances(EVENTS)
    last_day = max(d for _, d in got)
    final = {a: b for (a, d), (b, _, _) in got.items() if d == last_day}
    assert final == dict(store.balance_pairs())


def test_user_activity_splits_each_day_by_kind(store: SqlProjectionStore) -> None:
    rows = store.sql(f"SELECT account, day, {', '.join(fold.ACTIVITY)} FROM user_activity")
    got = {(a, d): tuple(rest) for a, d, *rest in rows}
    assert got == fold.user_activity(EVENTS)
    for earned, granted, spent, fees, reversed_, change, _ in got.values():
        assert change == earned + granted - spent - fees + reversed_


def test_room_summary_counts_members_fees_and_spending(store: SqlProjectionStore) -> None:
    rows = store.sql(f"SELECT room, {', '.join(fold.ROOM)} FROM room_summary")
    got = {room: tuple(rest) for room, *rest in rows}
    assert got == fold.room_summary(EVENTS)
    assert any(members > 0 for members, *_ in got.values())


def test_ledger_freshness_shows_positions_and_the_last_event(store: SqlProjectionStore) -> None:
    rows = store.sql('SELECT topic, "partition", next_offset, last_offset, last_event_at, '
                     "as_of, snapshot_taken_at FROM ledger_freshness")
    positions = store.positions()
    expected = fold.freshness(EVENTS)
    assert {(t, p) for t, p, *_ in rows} == set(positions)
    for topic, partition, next_offset, last_offset, last_at, as_of, taken in rows:
        assert next_offset == positions[(topic, partition)]
        assert as_of is None and taken is None  # a live store: no as_of, not a snapshot
        if topic == fold.TOPIC:
            want_offset, want_ms = expected[(topic, partition)]
            assert (last_offset, fold.as_ms(last_at)) == (want_offset, want_ms)
        else:
            assert last_offset is None and last_at is None


def test_as_of_of_a_replayed_snapshot_reads_as_a_utc_timestamp(
        store: SqlProjectionStore) -> None:
    store.sql("INSERT INTO projection_meta VALUES ('as_of', '1700000000123')")
    (as_of,) = {r[0] for r in store.sql("SELECT as_of FROM ledger_freshness")}
    assert fold.as_ms(as_of) == 1_700_000_000_123


def test_views_survive_a_replay_swap_and_a_second_ensure_schema(
        store: SqlProjectionStore) -> None:
    store.ensure_schema()
    store.begin_rebuild()
    store.abandon_rebuild()
    names = {n for (n,) in store.sql("SELECT view_name FROM duckdb_views() "
                                     "WHERE NOT internal")}
    assert names == set(VIEWS)
