"""The analysts' views of a Postgres store equal the same folds as DuckDB's, and survive a
replay's swap (Postgres refuses to drop a table that a view uses)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from projections.factory import open_store
from projections.sql_store import SqlProjectionStore
from projections.store import ACCOUNT_SCHEMA, BALANCE_SCHEMA, Snapshot
from tests import views_fold as fold
from tests.integration.journal_factory import fresh_pg_url

pytestmark = pytest.mark.integration
EVENTS = fold.demo_like_events()


@pytest.fixture
def store(postgres_url: str) -> Iterator[SqlProjectionStore]:
    s = open_store(fresh_pg_url(postgres_url))
    assert isinstance(s, SqlProjectionStore)
    with s:
        fold.fill_store(s, EVENTS)
        yield s


def test_views_equal_the_folds_of_the_journal(store: SqlProjectionStore) -> None:
    daily = store.sql("SELECT account, day, balance, change, postings FROM daily_balances")
    assert {(a, d): (b, c, n) for a, d, b, c, n in daily} == fold.daily_balances(EVENTS)
    activity = store.sql(f"SELECT account, day, {', '.join(fold.ACTIVITY)} FROM user_activity")
    assert {(a, d): tuple(rest) for a, d, *rest in activity} == fold.user_activity(EVENTS)
    rooms = store.sql(f"SELECT room, {', '.join(fold.ROOM)} FROM room_summary")
    assert {r: tuple(rest) for r, *rest in rooms} == fold.room_summary(EVENTS)
    fresh = store.sql('SELECT topic, "partition", last_offset, last_event_at '
                      f"FROM ledger_freshness WHERE topic = '{fold.TOPIC}'")
    assert {(t, p): (o, fold.as_ms(at)) for t, p, o, at in fresh} == fold.freshness(EVENTS)


def test_a_replay_swap_keeps_the_views(store: SqlProjectionStore) -> None:
    store.begin_rebuild()
    store.finish_rebuild(Snapshot(ACCOUNT_SCHEMA.empty_table(), BALANCE_SCHEMA.empty_table(),
                                  {(fold.TOPIC, 0): 0}))
    store.swap_rebuild(None)
    assert store.sql("SELECT count(*) FROM daily_balances") == [(0,)]
    assert store.sql('SELECT topic, "partition", next_offset FROM ledger_freshness') == [
        (fold.TOPIC, 0, 0)]
