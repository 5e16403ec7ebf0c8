"""One contract for every ProjectionStore adapter: DuckDB and Postgres pass the same tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from ledger.errors import JournalMismatchError, StoreError
from ledger.wire.event import Event, EventColumns
from projections.checksum import balance_checksum
from projections.factory import open_store
from projections.rows import (
    BalanceAccumulator,
    account_table,
    account_types,
    audit_table,
    balance_deltas,
)
from projections.sql_store import SqlProjectionStore
from projections.store import (
    ACCOUNT_SCHEMA,
    BALANCE_SCHEMA,
    TS,
    Batch,
    JournalIdentity,
    PartitionSummary,
    PositionConflict,
    Snapshot,
)

pytestmark = pytest.mark.integration
TOPIC = "p.events"
E1: Event = ("e1", "c1", "EARNED", [("system:rewards", -10), ("user:a", 10)], 1_000, "USER",
             "study", None)
E2: Event = ("e2", "c2", "JOINED", [("user:a", -4), ("room:r", 4)], 2_000, "ADMIN",
             'tab\there, "quoted", comma; newline\nand ünïcode', None)
E3: Event = ("e3", "c3", "REVERSED", [("user:a", -6), ("system:rewards", 6)], 3_000, "SYSTEM",
             "", "e1")


@pytest.fixture
def store(store_url: str) -> Iterator[SqlProjectionStore]:
    s = open_store(store_url)
    assert isinstance(s, SqlProjectionStore)
    with s:
        yield s


def batch(*events: tuple[Event, int, int], positions: dict[tuple[str, int], tuple[int, int]],
          accounts: list[dict[str, object]] | None = None) -> Batch:
    cols = EventColumns()
    for e, p, o in events:
        cols.add(e, p, o)
    audit = audit_table(cols, TOPIC)
    return Batch(audit=audit, deltas=balance_deltas(audit),
                 accounts=account_table(accounts) if accounts else None, positions=positions)


def account(name: str, floor: int = 0, status: str = "OPEN") -> dict[str, object]:
    return {"account": name, "type": name.split(":")[0].upper(), "floor": floor,
            "status": status, "opened_at": 500, "command_id": f"open-{name}"}


def test_schema_is_idempotent_and_id_stable(store_url: str, store: SqlProjectionStore) -> None:
    first = store.store_id()
    store.ensure_schema()
    with open_store(store_url) as again:
        assert again.store_id() == first
    assert store.positions() == {} and store.meta().keys() == {"store_id"}


def test_claim_positions_starts_new_partitions_at_zero(store: SqlProjectionStore) -> None:
    assert store.claim_positions([(TOPIC, 0), (TOPIC, 1)]) == {(TOPIC, 0): 0, (TOPIC, 1): 0}
    store.apply_batch(batch((E1, 0, 4), positions={(TOPIC, 0): (0, 5)}))
    assert store.claim_positions([(TOPIC, 0), (TOPIC, 2)]) == {(TOPIC, 0): 5, (TOPIC, 2): 0}
    assert store.positions() == {(TOPIC, 0): 5, (TOPIC, 1): 0, (TOPIC, 2): 0}


def test_batches_add_rows_balances_and_accounts(store: SqlProjectionStore) -> None:
    store.claim_positions([(TOPIC, 0), (TOPIC, 1), ("p.accounts", 0)])
    store.apply_batch(batch((E1, 0, 0), positions={(TOPIC, 0): (0, 1), ("p.accounts", 0): (0, 2)},
                            accounts=[account("user:a"), account("room:r", floor=3)]))
    store.apply_batch(batch((E2, 1, 7), (E3, 0, 2), positions={(TOPIC, 0): (1, 3),
                                                                (TOPIC, 1): (0, 8)},
                            accounts=[account("room:r", floor=1, status="CLOSED")]))
    assert dict(store.balance_pairs()) == {"system:rewards": -4, "user:a": 0, "room:r": 4}
    user = store.balance("user:a")
    assert user is not None and (user.balance, user.postings, user.type) == (0, 3, "USER")
    assert user.updated_at == 3_000
    room = store.account("room:r")
    assert room is not None and (room.floor, room.status, room.opened_at) == (1, "CLOSED", 500)
    assert store.balance("user:nobody") is None and store.account("user:nobody") is None
    assert store.positions()[(TOPIC, 0)] == 3


def test_audit_rows_round_trip_every_field(store: SqlProjectionStore) -> None:
    store.claim_positions([(TOPIC, 1)])
    store.apply_batch(batch((E2, 1, 7), (E3, 1, 9), positions={(TOPIC, 1): (0, 10)}))
    rows = store.history("user:a")
    assert [(r.event_id, r.amount, r.occurred_at, r.partition, r.offset) for r in rows] == [
        ("e2", -4, 2_000, 1, 7), ("e3", -6, 3_000, 1, 9)]
    assert rows[0].reason == E2[6] and rows[0].reverses_event_id is None
    assert rows[1].reason == "" and rows[1].reverses_event_id == "e1"
    assert (rows[0].kind, rows[0].actor, rows[0].command_id, rows[0].topic) == (
        "JOINED", "ADMIN", "c2", TOPIC)
    assert [r.event_id for r in store.history("user:a", limit=1)] == ["e3"]


def test_a_moved_position_refuses_the_whole_batch(store: SqlProjectionStore) -> None:
    store.claim_positions([(TOPIC, 0), (TOPIC, 1)])
    store.apply_batch(batch((E1, 0, 0), positions={(TOPIC, 0): (0, 1)}))
    stale = batch((E2, 1, 0), (E3, 0, 1), positions={(TOPIC, 1): (0, 1), (TOPIC, 0): (0, 2)})
    with pytest.raises(PositionConflict, match=r"p.events\[0\]"):
        store.apply_batch(stale)
    assert dict(store.balance_pairs()) == {"system:rewards": -10, "user:a": 10}
    assert store.positions() == {(TOPIC, 0): 1, (TOPIC, 1): 0}
    assert sum(s.rows for s in store.audit_summary().values()) == 2


def test_summary_mismatches_and_floors(store: SqlProjectionStore) -> None:
    store.claim_positions([(TOPIC, 0)])
    store.apply_batch(batch((E1, 0, 3), (E2, 0, 5), positions={(TOPIC, 0): (0, 6)},
                            accounts=[account("room:r", floor=10)]))
    assert store.audit_summary() == {(TOPIC, 0): PartitionSummary(4, 2, 0, 28, 16)}
    assert store.balance_mismatches() == []
    assert store.floor_breaches() == [("room:r", 4, 10)]
    store.sql("UPDATE balances SET balance = balance + 1 WHERE account = ?", ("user:a",))
    assert store.balance_mismatches() == [("user:a", 7, 6)]
    assert store.account_count() == 3


def test_rebuild_swaps_in_one_step_and_records_as_of(store: SqlProjectionStore) -> None:
    store.claim_positions([(TOPIC, 0)])
    store.apply_batch(batch((E1, 0, 0), positions={(TOPIC, 0): (0, 1)}))
    cols = EventColumns()
    cols.add(E2, 0, 1)
    audit = audit_table(cols, TOPIC)
    acc = BalanceAccumulator()
    acc.add(balance_deltas(audit))
    store.begin_rebuild()
    store.append_rebuild(audit)
    store.finish_rebuild(Snapshot(account_table([account("room:r")]), acc.table(),
                                  {(TOPIC, 0): 2, (TOPIC, 1): 0}))
    assert dict(store.balance_pairs()) == {"system:rewards": -10, "user:a": 10}  # not yet
    assert dict(store.balance_pairs(shadow=True)) == {"user:a": -4, "room:r": 4}
    assert store.balance_mismatches(shadow=True) == []
    store.swap_rebuild(as_of=2_500)
    assert dict(store.balance_pairs()) == {"user:a": -4, "room:r": 4}
    assert store.positions() == {(TOPIC, 0): 2, (TOPIC, 1): 0}
    assert store.meta()["as_of"] == "2500" and store.account("room:r") is not None
    store.begin_rebuild()  # a second rebuild over the swapped tables works too
    store.finish_rebuild(Snapshot(account_table([]), BalanceAccumulator().table(), {}))
    store.swap_rebuild(as_of=None)
    assert dict(store.balance_pairs()) == {} and "as_of" not in store.meta()


def test_abandoned_rebuild_leaves_live_tables(store: SqlProjectionStore) -> None:
    store.claim_positions([(TOPIC, 0)])
    store.apply_batch(batch((E1, 0, 0), positions={(TOPIC, 0): (0, 1)}))
    store.begin_rebuild()
    store.append_rebuild(batch((E2, 0, 1), positions={}).audit)
    store.abandon_rebuild()
    store.begin_rebuild()  # leftovers of an interrupted rebuild are replaced
    store.abandon_rebuild()
    assert dict(store.balance_pairs()) == {"system:rewards": -10, "user:a": 10}
    assert [r.event_id for r in store.history("user:a")] == ["e1"]


def test_rebuild_load_does_not_hold_appended_rows(store: SqlProjectionStore) -> None:
    """A long replay's memory stays flat: the store keeps none of the Arrow it was given."""
    def rows(n: int, first: int) -> pa.Table:
        cols = EventColumns()
        for i in range(first, first + n):
            cols.add((f"e{i}", f"c{i}", "EARNED", [("system:rewards", -1), (f"user:u{i}", 1)],
                      i, "USER", "r" * 50, None), 0, i)
        return audit_table(cols, TOPIC)

    store.begin_rebuild()
    before = pa.total_allocated_bytes()
    one = rows(5_000, 0)
    size = pa.total_allocated_bytes() - before
    store.append_rebuild(one)
    del one
    for k in range(1, 6):
        store.append_rebuild(rows(5_000, k * 5_000))
    held = pa.total_allocated_bytes() - before
    store.abandon_rebuild()
    assert size > 0 and held < size, f"{held} bytes of Arrow still held after 6 appends"


def test_many_rows_stream_through_bulk_paths(store: SqlProjectionStore) -> None:
    cols = EventColumns()
    for i in range(30_000):
        cols.add((f"e{i}", f"c{i}", "EARNED", [("system:rewards", -i), (f"user:u{i % 997}", i)],
                  i, "USER", "r", None), i % 3, i)
    store.claim_positions([(TOPIC, p) for p in range(3)])
    audit = audit_table(cols, TOPIC)
    store.apply_batch(Batch(audit=audit, deltas=balance_deltas(audit),
                            positions={(TOPIC, p): (0, 30_000) for p in range(3)}))
    pairs = dict(store.balance_pairs())
    assert len(pairs) == 998 and sum(pairs.values()) == 0
    assert pairs["user:u5"] == sum(i for i in range(30_000) if i % 997 == 5)


def test_sql_identical_in_both_stores_for_timestamps(store: SqlProjectionStore) -> None:
    t = account_table([account("user:a")])
    assert t.column("opened_at").type == pa.timestamp("ms")
    store.claim_positions([("p.accounts", 0)])
    store.apply_batch(Batch(accounts=t, positions={("p.accounts", 0): (0, 1)}))
    row = store.account("user:a")
    assert row is not None and row.opened_at == 500


def test_unreachable_postgres_is_one_line_without_password() -> None:
    with pytest.raises(StoreError) as e:
        open_store("postgresql+psycopg://u:s3cret@127.0.0.1:1/db?connect_timeout=2")
    text = str(e.value)
    assert "127.0.0.1:1" in text and "s3cret" not in text and "\n" not in text


def test_bad_url_is_a_usage_error() -> None:
    from ledger.errors import UsageError

    with pytest.raises(UsageError, match="unsupported store URL"):
        open_store("mysql://x")


def test_a_duckdb_store_in_a_missing_directory_says_so(tmp_path: Path) -> None:
    """`duckdb:///tmp/x.duckdb` is relative (tmp/x.duckdb): the error must name the
    directory, not suggest that another process holds the file."""
    from ledger.errors import UsageError

    missing = tmp_path / "no-such-dir" / "x.duckdb"
    with pytest.raises(UsageError, match=r"no directory .*no-such-dir") as e:
        open_store(f"duckdb:///{missing}")
    assert "another process" not in str(e.value) and not missing.parent.exists()


def test_locked_duckdb_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.duckdb"
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import duckdb,time; c=duckdb.connect({str(path)!r}); "
                               "print('ok', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().startswith(b"ok")
        with pytest.raises(StoreError, match="another process"):
            open_store(f"duckdb:///{path}")
    finally:
        holder.kill()
        holder.wait()


def test_a_big_rebuild_append_lands_whole(store: SqlProjectionStore) -> None:
    # Postgres splits big appends over two sessions: every row must arrive, once.
    cols = EventColumns()
    n = 15_000  # 30,000 audit rows: above the split threshold
    for i in range(n):
        cols.add((f"e{i}", f"c{i}", "EARNED", [("system:rewards", -1 - i % 7),
                                                (f"user:u{i % 50}", 1 + i % 7)],
                  1_000 + i, "SYSTEM", "r", None), i % 3, i)
    audit = audit_table(cols, TOPIC)
    acc = BalanceAccumulator()
    acc.add(balance_deltas(audit))
    store.begin_rebuild()
    store.append_rebuild(audit)
    positions = {(TOPIC, p): n for p in range(3)}
    store.finish_rebuild(Snapshot(account_table([]), acc.table(), positions))
    summary = store.audit_summary(shadow=True)
    assert sum(s.rows for s in summary.values()) == 2 * n
    assert sum(s.events for s in summary.values()) == n
    assert sum(s.offset_sum for s in summary.values()) == 2 * sum(range(n))
    assert store.balance_mismatches(shadow=True) == []
    store.swap_rebuild(as_of=None)
    assert dict(store.balance_pairs()) == dict(acc.pairs())


def balance_table(accounts: pa.Array, balances: pa.Array) -> pa.Table:
    """BALANCE_SCHEMA rows of those accounts and balances (one posting each)."""
    n = len(accounts)
    return pa.table([accounts, balances, account_types(accounts),
                     pa.repeat(1, n).cast(pa.int64()),
                     pa.repeat(500, n).cast(pa.int64()).cast(TS)], schema=BALANCE_SCHEMA)


def test_rebuild_of_half_a_million_accounts(store: SqlProjectionStore) -> None:
    """The accounts' and balances' keys fit however small the audit load's memory was."""
    n = 500_000
    names = pa.array([f"user:u{i}" for i in range(n)], pa.string())
    accounts = pa.table([names, pa.repeat("USER", n), pa.repeat(0, n).cast(pa.int64()),
                         pa.repeat("OPEN", n), pa.repeat(500, n).cast(pa.int64()).cast(TS),
                         pa.repeat("", n)], schema=ACCOUNT_SCHEMA)
    balances = balance_table(names, pa.array(range(n), pa.int64()))
    store.begin_rebuild()
    store.append_rebuild(batch((E1, 0, 0), positions={}).audit)
    store.finish_rebuild(Snapshot(accounts, balances, {(TOPIC, 0): 1}))
    store.swap_rebuild(as_of=None)
    assert store.account_count() == n
    assert store.balance("user:u499999") is not None


def test_balance_checksum_is_the_reference_one(store: SqlProjectionStore) -> None:
    """Computed where the rows are (SQL in DuckDB), it equals checksum.balance_checksum."""
    names = ["user:ünïcode", "room:a b", "user:" + "x" * 300, "user:z", "system:rewards"]
    amounts = [7, -3, 0, 2**62, -(2**62) - 4]
    balances = balance_table(pa.array(names), pa.array(amounts, pa.int64()))
    assert store.balance_checksum() == balance_checksum([]) == "0" * 16
    store.begin_rebuild()
    store.finish_rebuild(Snapshot(ACCOUNT_SCHEMA.empty_table(), balances, {}))
    assert store.balance_checksum(shadow=True) == balance_checksum(zip(names, amounts, strict=True))
    store.swap_rebuild(as_of=None)
    assert store.balance_checksum() == balance_checksum(store.balance_pairs())
    assert store.balance_checksum() == balance_checksum(zip(names, amounts, strict=True))


A = JournalIdentity("a", "cluster-1")
B = JournalIdentity("b", "cluster-1")


def test_a_store_records_the_first_journal_claimed(store: SqlProjectionStore) -> None:
    assert store.journal() is None
    assert store.claim_journal(A) == A and store.journal() == A
    assert store.claim_journal(B) == A  # recorded already: the caller refuses
    assert store.claim_journal(JournalIdentity("a", "cluster-2")) == A
    assert store.meta().keys() == {"store_id", "journal_prefix", "journal_cluster_id"}


def test_a_claimed_store_refuses_positions_once_another_journal_took_it(
        store_url: str, store: SqlProjectionStore) -> None:
    store.claim_journal(A)
    store.claim_positions([(TOPIC, 0)])
    store.apply_batch(batch((E1, 0, 0), positions={(TOPIC, 0): (0, 1)}))
    with open_store(store_url) as other:  # another process, say
        other.reset_projection(B)
    with pytest.raises(JournalMismatchError, match="prefix 'b'"):
        store.claim_positions([(TOPIC, 0)])


def test_reset_empties_the_projection_and_records_the_journal(
        store: SqlProjectionStore) -> None:
    first = store.store_id()
    store.begin_rebuild()
    store.finish_rebuild(Snapshot(account_table([]), BalanceAccumulator().table(), {}))
    store.swap_rebuild(as_of=5, journal=A)
    store.claim_positions([(TOPIC, 0)])
    store.apply_batch(batch((E1, 0, 0), positions={(TOPIC, 0): (0, 1)},
                            accounts=[account("user:a")]))
    store.reset_projection(B)
    assert "as_of" not in store.meta()
    assert store.positions() == {} and dict(store.balance_pairs()) == {}
    assert store.history("user:a") == [] and store.account("user:a") is None
    assert store.journal() == B and store.store_id() == first
    assert store.claim_positions([(TOPIC, 0)]) == {(TOPIC, 0): 0}


def test_a_swap_records_the_journal_rebuilt(store: SqlProjectionStore) -> None:
    store.claim_journal(A)
    store.begin_rebuild()
    store.finish_rebuild(Snapshot(account_table([]), BalanceAccumulator().table(), {}))
    store.swap_rebuild(as_of=None, journal=B)
    assert store.journal() == B
    store.begin_rebuild()
    store.finish_rebuild(Snapshot(account_table([]), BalanceAccumulator().table(), {}))
    store.swap_rebuild(as_of=7)
    assert store.journal() == B and store.meta()["as_of"] == "7"


def test_journal_identities_match_on_prefix_and_known_cluster() -> None:
    assert A.matches(JournalIdentity("a", "cluster-1"))
    assert A.matches(JournalIdentity("a", "")) and JournalIdentity("a", "").matches(A)
    assert not A.matches(B) and not A.matches(JournalIdentity("a", "cluster-2"))
    assert str(A) == "prefix 'a' on Kafka cluster cluster-1"
