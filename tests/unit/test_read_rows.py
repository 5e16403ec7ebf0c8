"""Decoded events to Arrow: audit rows, balance increments, summaries, balances."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.wire.event import Event, EventColumns
from projections.rows import (
    BalanceAccumulator,
    account_table,
    audit_table,
    balance_deltas,
    latest_accounts,
    merge_summaries,
    summarize,
    unbalanced,
)
from projections.store import AUDIT_SCHEMA, PartitionSummary

E1: Event = ("e1", "c1", "EARNED", [("system:rewards", -10), ("user:a", 10)], 1000, "USER",
             "study", None)
E2: Event = ("e2", "c2", "JOINED", [("user:a", -4), ("room:r", 4)], 2000, "USER", "join", None)
E3: Event = ("e3", "c3", "REVERSED", [("user:a", -10), ("system:rewards", 10), ("room:r", 1)],
             3000, "ADMIN", "fix\ttab", "e1")


def columns(*events: tuple[Event, int, int]) -> EventColumns:
    cols = EventColumns()
    for e, partition, offset in events:
        cols.add(e, partition, offset)
    return cols


def test_audit_rows_one_per_posting_with_event_fields_spread() -> None:
    t = audit_table(columns((E1, 0, 5), (E3, 2, 9)), "p.events")
    assert t.schema == AUDIT_SCHEMA
    rows = t.to_pylist()
    assert [(r["event_id"], r["posting"], r["account"], r["amount"]) for r in rows] == [
        ("e1", 0, "system:rewards", -10), ("e1", 1, "user:a", 10),
        ("e3", 0, "user:a", -10), ("e3", 1, "system:rewards", 10), ("e3", 2, "room:r", 1)]
    assert {(r["event_id"], r["partition"], r["offset"], r["kind"], r["reason"],
             r["reverses_event_id"], r["topic"]) for r in rows} == {
        ("e1", 0, 5, "EARNED", "study", None, "p.events"),
        ("e3", 2, 9, "REVERSED", "fix\ttab", "e1", "p.events")}
    assert rows[0]["occurred_at"].isoformat() == "1970-01-01T00:00:01"


def test_empty_batch() -> None:
    t = audit_table(EventColumns(), "p.events")
    assert t.num_rows == 0 and t.schema == AUDIT_SCHEMA
    assert summarize(t) == {} and unbalanced(t) == []


def test_deltas_sum_per_account_and_type_from_prefix() -> None:
    d = balance_deltas(audit_table(columns((E1, 0, 0), (E2, 0, 1), (E3, 1, 0)), "p.events"))
    got = {r["account"]: (r["balance"], r["postings"], r["type"]) for r in d.to_pylist()}
    assert got == {"system:rewards": (0, 2, "SYSTEM"), "user:a": (-4, 3, "USER"),
                   "room:r": (5, 2, "ROOM")}
    latest = {r["account"]: r["updated_at"].timestamp() for r in d.to_pylist()}
    assert latest["user:a"] == 3.0


def test_accumulator_adds_batches() -> None:
    acc = BalanceAccumulator()
    acc.add(balance_deltas(audit_table(columns((E1, 0, 0)), "t")))
    acc.add(balance_deltas(audit_table(columns((E2, 0, 1)), "t")))
    assert dict(acc.pairs()) == {"system:rewards": -10, "user:a": 6, "room:r": 4}
    table = {r["account"]: (r["balance"], r["postings"]) for r in acc.table().to_pylist()}
    assert table == {"system:rewards": (-10, 1), "user:a": (6, 2), "room:r": (4, 1)}


def test_summary_counts_events_and_sums_per_partition() -> None:
    t = audit_table(columns((E1, 0, 5), (E2, 0, 7), (E3, 1, 2)), "p.events")
    s = summarize(t)
    assert s == {("p.events", 0): PartitionSummary(4, 2, 0, 28, 5 + 5 + 7 + 7),
                 ("p.events", 1): PartitionSummary(3, 1, 1, 21, 6)}
    merged = dict(s)
    merge_summaries(merged, s)
    assert merged[("p.events", 1)] == PartitionSummary(6, 2, 2, 42, 12)


def test_unbalanced_events_found() -> None:
    t = audit_table(columns((E1, 0, 0), (E3, 0, 1)), "p.events")
    assert unbalanced(t) == [("e3", 1)]


def test_account_table() -> None:
    t = account_table([{"account": "room:r", "type": "ROOM", "floor": 5, "status": "OPEN",
                        "opened_at": 1000, "command_id": "c"}])
    assert t.column("floor").to_pylist() == [5]
    assert t.column("opened_at").type == pa.timestamp("ms")


def test_partitions_split_over_decoder_processes() -> None:
    from projections.parallel import split

    ranges = {("p.events", i): (0, 10 * i) for i in range(5)} | {("p.accounts", 0): (0, 3)}
    shares = split(ranges, 2, "p.events")
    assert [sorted(s) for s in shares] == [
        [("p.accounts", 0), ("p.events", 0), ("p.events", 2), ("p.events", 4)],
        [("p.events", 1), ("p.events", 3)]]
    assert split(ranges, 9, "p.events")[0].keys() == {("p.accounts", 0), ("p.events", 0)}
    assert len(split(ranges, 9, "p.events")) == 5 and split({}, 3, "p.events") == []


def test_latest_accounts_keeps_the_last_state_of_each() -> None:
    def acc(name: str, status: str) -> dict[str, object]:
        return {"account": name, "type": "USER", "floor": 0, "status": status,
                "opened_at": 1, "command_id": "c"}

    first = account_table([acc("user:a", "OPEN"), acc("user:b", "OPEN")])
    second = account_table([acc("user:a", "CLOSED")])
    got = latest_accounts([first, second])
    assert sorted((r["account"], r["status"]) for r in got.to_pylist()) == [
        ("user:a", "CLOSED"), ("user:b", "OPEN")]
    assert latest_accounts([]).num_rows == 0


postings_st = st.lists(st.tuples(st.sampled_from(["user:a", "user:b", "room:r", "system:x", "é"]),
                                 st.integers(-2**40, 2**40)), min_size=1, max_size=4)
events_st = st.lists(st.tuples(postings_st, st.integers(0, 2**41), st.integers(0, 5),
                               st.sampled_from(["p.events", "q.events"])), max_size=30)


def _audit(events: list[tuple[list[tuple[str, int]], int, int, str]], chunk: int) -> pa.Table:
    """The audit rows of generated events, in chunks of `chunk` events (each with its topic)."""
    tables = [audit_table(columns(((f"e{i}", "c", "EARNED", postings, at, "USER", "", None),
                                   partition, i)), topic)
              for i, (postings, at, partition, topic) in enumerate(events)]
    merged = [pa.concat_tables(tables[i:i + chunk]) for i in range(0, len(tables), chunk)]
    return pa.concat_tables([AUDIT_SCHEMA.empty_table(), *merged])


def _by_account(table: pa.Table) -> dict[str, list[int]]:
    """account -> [balance, postings, updated_at as epoch ms] of a balances-shaped table."""
    ms = table.column("updated_at").cast(pa.int64()).to_pylist()
    return {r["account"]: [r["balance"], r["postings"], t]
            for r, t in zip(table.to_pylist(), ms, strict=True)}


@settings(max_examples=150, deadline=None)
@given(events_st, st.integers(1, 7))
def test_sums_and_summaries_equal_a_plain_fold(
    events: list[tuple[list[tuple[str, int]], int, int, str]], chunk: int
) -> None:
    """Per account and per partition, on chunked, multi-topic input, as a dict fold says."""
    balances: dict[str, list[int]] = {}
    summary: dict[tuple[str, int], PartitionSummary] = {}
    for i, (postings, at, partition, topic) in enumerate(events):
        for n, (account, amount) in enumerate(postings):
            b = balances.setdefault(account, [0, 0, -2**63])
            b[0], b[1], b[2] = b[0] + amount, b[1] + 1, max(b[2], at)
            merge_summaries(summary, {(topic, partition): PartitionSummary(
                1, int(n == 0), amount, abs(amount), i)})
    audit = _audit(events, chunk)
    assert summarize(audit) == summary
    assert _by_account(balance_deltas(audit)) == balances
    acc = BalanceAccumulator()
    for i in range(0, audit.num_rows, 3):
        acc.add(balance_deltas(audit.slice(i, 3)))
    assert _by_account(acc.table()) == balances
    assert dict(acc.pairs()) == {a: b[0] for a, b in balances.items()} and len(acc) == len(
        balances)
