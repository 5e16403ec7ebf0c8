"""Decoded journal events to Arrow: audit rows, balance increments, summaries.

Pure functions over Arrow tables; no Kafka, no database. Event-level fields are
collected once per event and spread over its postings with one `take`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from projections.decode import EventColumns
from projections.store import (
    ACCOUNT_SCHEMA,
    AUDIT_SCHEMA,
    BALANCE_SCHEMA,
    TS,
    PartitionSummary,
    PositionKey,
)

Record = Mapping[str, Any]


def audit_table(cols: EventColumns, topic: str) -> pa.Table:
    """The audit rows (AUDIT_SCHEMA) of the events in cols, one per posting."""
    owner = pa.array(cols.owner, pa.int32())

    def spread(values: list[Any], type_: pa.DataType) -> pa.Array:
        return pa.array(values, type_).take(owner)

    return pa.table([
        spread(cols.event_id, pa.string()), spread(cols.command_id, pa.string()),
        spread(cols.kind, pa.string()), pa.array(cols.posting, pa.int32()),
        pa.array(cols.account, pa.string()), pa.array(cols.amount, pa.int64()),
        spread(cols.actor, pa.string()), spread(cols.reason, pa.string()),
        spread(cols.occurred_at, pa.int64()).cast(TS),
        spread(cols.reverses, pa.string()), pa.repeat(topic, len(cols.owner)),
        spread(cols.partition, pa.int32()), spread(cols.offset, pa.int64()),
    ], schema=AUDIT_SCHEMA)


def account_types(accounts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """USER, ROOM, SYSTEM from the account name's prefix (`user:u1` -> USER)."""
    return pc.utf8_upper(pc.list_element(pc.split_pattern(accounts, ":", max_splits=1), 0))


def account_type(account: str) -> str:
    return account.split(":", 1)[0].upper()


def balance_deltas(audit: pa.Table) -> pa.Table:
    """Per account: sum of amounts, count of postings, latest occurred_at (BALANCE_SCHEMA)."""
    g = audit.group_by("account").aggregate(
        [("amount", "sum"), ("amount", "count"), ("occurred_at", "max")])
    accounts = g.column("account")
    return pa.table([accounts, g.column("amount_sum"), account_types(accounts),
                     g.column("amount_count"), g.column("occurred_at_max")],
                    schema=BALANCE_SCHEMA)


class BalanceAccumulator:
    """Balances of every account, summed batch by batch (memory: one entry per account)."""

    def __init__(self) -> None:
        self.balances: dict[str, list[int]] = {}  # account -> [balance, postings, updated_at]

    def add(self, deltas: pa.Table) -> None:
        cols = [deltas.column(c).to_pylist() for c in ("account", "balance", "postings")]
        stamps = deltas.column("updated_at").cast(pa.int64()).to_pylist()
        get = self.balances.get
        for account, amount, n, at in zip(*cols, stamps, strict=True):
            entry = get(account)
            if entry is None:
                self.balances[account] = [amount, n, at]
            else:
                entry[0] += amount
                entry[1] += n
                entry[2] = max(entry[2], at)

    def pairs(self) -> Iterable[tuple[str, int]]:
        return ((a, e[0]) for a, e in self.balances.items())

    def table(self) -> pa.Table:
        accounts = pa.array(list(self.balances), pa.string())
        values = list(self.balances.values())
        return pa.table([
            accounts, pa.array([v[0] for v in values], pa.int64()), account_types(accounts),
            pa.array([v[1] for v in values], pa.int64()),
            pa.array([v[2] for v in values], pa.int64()).cast(TS),
        ], schema=BALANCE_SCHEMA)


def account_table(records: Iterable[Record]) -> pa.Table:
    """Account states (decoded `account` records) as ACCOUNT_SCHEMA rows."""
    rows = list(records)
    return pa.table([
        pa.array([r["account"] for r in rows], pa.string()),
        pa.array([r["type"] for r in rows], pa.string()),
        pa.array([r["floor"] for r in rows], pa.int64()),
        pa.array([r["status"] for r in rows], pa.string()),
        pa.array([r["opened_at"] for r in rows], pa.int64()).cast(TS),
        pa.array([r.get("command_id", "") for r in rows], pa.string()),
    ], schema=ACCOUNT_SCHEMA)


def summarize(audit: pa.Table) -> dict[PositionKey, PartitionSummary]:
    """Per (topic, partition): postings, events, sums — the same figures the store reports."""
    if audit.num_rows == 0:
        return {}
    t = pa.table({
        "topic": audit.column("topic"), "partition": audit.column("partition"),
        "amount": audit.column("amount"), "abs": pc.abs(audit.column("amount")),
        "first": pc.cast(pc.equal(audit.column("posting"), 0), pa.int64()),
        "offset": audit.column("offset"),
    })
    g = t.group_by(["topic", "partition"]).aggregate(
        [("amount", "count"), ("first", "sum"), ("amount", "sum"), ("abs", "sum"),
         ("offset", "sum")]).to_pylist()
    return {(r["topic"], r["partition"]): PartitionSummary(
        r["amount_count"], r["first_sum"], r["amount_sum"], r["abs_sum"], r["offset_sum"])
        for r in g}


def merge_summaries(into: dict[PositionKey, PartitionSummary],
                    more: Mapping[PositionKey, PartitionSummary]) -> None:
    for key, s in more.items():
        into[key] = into.get(key, PartitionSummary()).plus(s)


def unbalanced(audit: pa.Table) -> list[tuple[str, int]]:
    """(event_id, sum) of events in the batch whose postings do not sum to zero."""
    if audit.num_rows == 0:
        return []
    g = audit.group_by(["event_id", "partition", "offset"]).aggregate([("amount", "sum")])
    bad = g.filter(pc.not_equal(g.column("amount_sum"), 0))
    return list(zip(bad.column("event_id").to_pylist(), bad.column("amount_sum").to_pylist(),
                    strict=True))
