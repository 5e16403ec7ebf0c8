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


def balance_sums(audit: pa.Table) -> pa.Table:
    """Per account: sum of amounts, count of postings, latest occurred_at (no type)."""
    g = audit.group_by("account").aggregate(
        [("amount", "sum"), ("amount", "count"), ("occurred_at", "max")])
    return g.rename_columns(["account", "balance", "postings", "updated_at"])


def balance_deltas(audit: pa.Table) -> pa.Table:
    """Per account: sum of amounts, count of postings, latest occurred_at (BALANCE_SCHEMA)."""
    g = balance_sums(audit)
    accounts = g.column("account")
    return pa.table([accounts, g.column("balance"), account_types(accounts),
                     g.column("postings"), g.column("updated_at")], schema=BALANCE_SCHEMA)


class BalanceAccumulator:
    """Balances of every account, summed batch by batch, in Arrow.

    Batches' deltas are kept as they come and re-grouped once they hold more rows than
    the last grouping (and at least COMPACT_ROWS): the work per event stays constant,
    runs outside the GIL, and memory stays within about twice one entry per account.
    """

    COMPACT_ROWS = 200_000

    def __init__(self) -> None:
        self._parts: list[pa.Table] = []
        self._rows = 0
        self._compacted = 0

    def add(self, deltas: pa.Table) -> None:
        """Add a batch's deltas (balance_sums or balance_deltas: increments per account)."""
        self._parts.append(deltas.select(["account", "balance", "postings", "updated_at"]))
        self._rows += deltas.num_rows
        if self._rows - self._compacted > max(self.COMPACT_ROWS, self._compacted):
            self._compact()

    def _compact(self) -> pa.Table:
        if len(self._parts) != 1:
            empty = pa.table({n: pa.array([], BALANCE_SCHEMA.field(n).type)
                              for n in ("account", "balance", "postings", "updated_at")})
            g = pa.concat_tables([empty, *self._parts]).group_by("account").aggregate(
                [("balance", "sum"), ("postings", "sum"), ("updated_at", "max")])
            self._parts = [g.rename_columns(["account", "balance", "postings", "updated_at"])]
            self._rows = self._compacted = self._parts[0].num_rows
        return self._parts[0]

    def __len__(self) -> int:
        """Accounts with at least one posting."""
        return int(self._compact().num_rows)

    def pairs(self) -> Iterable[tuple[str, int]]:
        t = self._compact()
        return zip(t.column("account").to_pylist(), t.column("balance").to_pylist(),
                   strict=True)

    def table(self) -> pa.Table:
        t = self._compact()
        accounts = t.column("account")
        return pa.table([accounts, t.column("balance"), account_types(accounts),
                         t.column("postings"), t.column("updated_at")], schema=BALANCE_SCHEMA)


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


def latest_accounts(tables: list[pa.Table]) -> pa.Table:
    """ACCOUNT_SCHEMA tables in log order -> the last row of each account."""
    t = pa.concat_tables([ACCOUNT_SCHEMA.empty_table(), *tables])
    order = pa.table({"account": t.column("account"), "i": pa.array(range(t.num_rows), pa.int64())})
    last = order.group_by("account").aggregate([("i", "max")]).column("i_max")
    return t.take(last.combine_chunks() if isinstance(last, pa.ChunkedArray) else last)


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
