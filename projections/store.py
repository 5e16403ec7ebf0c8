"""The projection store port: what the projector, replay, verify and the CLI need.

Two adapters implement it (DuckDBProjectionStore, PostgresProjectionStore) and
pass one contract suite. Rows cross the port in columns (Arrow tables) for the
bulk paths and as small frozen dataclasses for reads.

Tables (names fixed; analysts rely on them):
  accounts(account, type, floor, status, opened_at, command_id)
  balances(account, balance, type, postings, updated_at)
  audit_log(event_id, command_id, kind, posting, account, amount, actor, reason,
            occurred_at, reverses_event_id, topic, partition, offset)
  projection_positions(topic, partition, next_offset)
  projection_meta(key, value): store_id; journal_prefix and journal_cluster_id, the
      journal the store projects (one store, one journal); as_of of a replayed snapshot
Timestamps are UTC, stored as TIMESTAMP without time zone in both stores.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

import pyarrow as pa

from ledger.errors import StoreError

PositionKey = tuple[str, int]  # (topic, partition)
TS = pa.timestamp("ms")

AUDIT_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("command_id", pa.string()), ("kind", pa.string()),
    ("posting", pa.int32()), ("account", pa.string()), ("amount", pa.int64()),
    ("actor", pa.string()), ("reason", pa.string()), ("occurred_at", TS),
    ("reverses_event_id", pa.string()), ("topic", pa.string()), ("partition", pa.int32()),
    ("offset", pa.int64()),
])
ACCOUNT_SCHEMA = pa.schema([
    ("account", pa.string()), ("type", pa.string()), ("floor", pa.int64()),
    ("status", pa.string()), ("opened_at", TS), ("command_id", pa.string()),
])
BALANCE_SCHEMA = pa.schema([
    ("account", pa.string()), ("balance", pa.int64()), ("type", pa.string()),
    ("postings", pa.int64()), ("updated_at", TS),
])
POSITION_SCHEMA = pa.schema([
    ("topic", pa.string()), ("partition", pa.int32()), ("next_offset", pa.int64()),
])
META_AS_OF = "as_of"  # epoch ms of a replay --as-of snapshot; absent on a live store
META_STORE_ID = "store_id"
META_JOURNAL_PREFIX = "journal_prefix"  # the topic prefix of the journal projected
META_JOURNAL_CLUSTER = "journal_cluster_id"  # the Kafka cluster id of that journal


@dataclass(frozen=True)
class JournalIdentity:
    """Which journal a store projects: its topic prefix on one Kafka cluster."""

    prefix: str
    cluster_id: str  # '' where unknown (a store made before identities were recorded)

    def matches(self, other: JournalIdentity) -> bool:
        return self.prefix == other.prefix and (
            self.cluster_id == other.cluster_id or "" in (self.cluster_id, other.cluster_id))

    def __str__(self) -> str:
        return f"prefix {self.prefix!r} on Kafka cluster {self.cluster_id or '(unknown)'}"


class PositionConflict(StoreError):
    """Another projector moved a partition's stored position: this one lost it."""


@dataclass(frozen=True)
class AccountRow:
    account: str
    type: str
    floor: int
    status: str
    opened_at: int | None  # epoch ms
    command_id: str


@dataclass(frozen=True)
class BalanceRow:
    account: str
    balance: int
    type: str
    postings: int
    updated_at: int | None  # epoch ms of the latest posting


@dataclass(frozen=True)
class AuditRow:
    event_id: str
    command_id: str
    kind: str
    posting: int
    account: str
    amount: int
    actor: str
    reason: str
    occurred_at: int  # epoch ms
    reverses_event_id: str | None
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class PartitionSummary:
    """What one journal partition contributed: compared between store and log."""

    rows: int = 0  # postings
    events: int = 0
    amount_sum: int = 0
    amount_abs_sum: int = 0
    offset_sum: int = 0  # sum over postings of their event's offset: catches shifted rows

    def plus(self, other: PartitionSummary) -> PartitionSummary:
        return PartitionSummary(*(a + b for a, b in zip(self.astuple(), other.astuple(),
                                                        strict=True)))

    def astuple(self) -> tuple[int, int, int, int, int]:
        return (self.rows, self.events, self.amount_sum, self.amount_abs_sum, self.offset_sum)


@dataclass
class Batch:
    """One store transaction of the live projector: rows and the positions they reach.

    positions maps each partition to (stored next_offset the batch starts from, new one);
    the store refuses the batch (PositionConflict) if the stored one has moved.
    """

    audit: pa.Table | None = None  # AUDIT_SCHEMA
    deltas: pa.Table | None = None  # BALANCE_SCHEMA, balance and postings as increments
    accounts: pa.Table | None = None  # ACCOUNT_SCHEMA, latest state per account
    positions: dict[PositionKey, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Snapshot:
    """The end of a rebuild: everything but the audit rows, which were appended before."""

    accounts: pa.Table  # ACCOUNT_SCHEMA
    balances: pa.Table  # BALANCE_SCHEMA
    positions: dict[PositionKey, int]


class ProjectionStore(Protocol):
    """A projection store. Every method raises StoreError on database failures."""

    @property
    def url(self) -> str:
        """The store URL with any password removed, for messages."""

    @property
    def shared(self) -> bool:
        """Can several processes write it at once (then projectors share partitions)?"""

    def ensure_schema(self) -> None:
        """Create the tables if missing (idempotent)."""

    def store_id(self) -> str:
        """A random id made once per store: names the projectors' consumer group."""

    def meta(self) -> dict[str, str]:
        """projection_meta as a dict (for example the as_of of a replayed snapshot)."""

    def journal(self) -> JournalIdentity | None:
        """The journal recorded in projection_meta, if any."""

    def claim_journal(self, journal: JournalIdentity) -> JournalIdentity:
        """Record journal unless the store records one already; return the recorded one.

        From then on claim_positions refuses (JournalMismatchError) once the store
        records another journal (a --reset by another process)."""

    def reset_projection(self, journal: JournalIdentity) -> None:
        """Empty every live table and projection_meta (but store_id); record journal."""

    def positions(self, shadow: bool = False) -> dict[PositionKey, int]:
        """Stored next offsets per (topic, partition)."""

    def claim_positions(self, keys: Iterable[PositionKey]) -> dict[PositionKey, int]:
        """Positions of the given partitions, inserting 0 for partitions never seen."""

    def apply_batch(self, batch: Batch) -> None:
        """Rows, balance increments, account states and positions in one transaction."""

    def begin_rebuild(self) -> None:
        """Create empty shadow tables, dropping any left over by an interrupted rebuild."""

    def append_rebuild(self, audit: pa.Table) -> None:
        """Append audit rows to the shadow audit_log."""

    def finish_rebuild(self, snapshot: Snapshot) -> None:
        """Write accounts, balances, positions into the shadow tables; index them."""

    def swap_rebuild(self, as_of: int | None, journal: JournalIdentity | None = None) -> None:
        """Replace the live tables with the shadow ones in one transaction; record as_of
        and the journal they hold."""

    def abandon_rebuild(self) -> None:
        """Drop the shadow tables."""

    def balance(self, account: str) -> BalanceRow | None: ...

    def account(self, account: str) -> AccountRow | None: ...

    def history(self, account: str, limit: int | None = None) -> list[AuditRow]:
        """Audit rows of an account, oldest first (the newest `limit` if given)."""

    def balance_pairs(self, shadow: bool = False) -> Iterator[tuple[str, int]]:
        """Every (account, balance), in no particular order."""

    def balance_checksum(self, shadow: bool = False) -> str:
        """checksum.balance_checksum of balance_pairs (computed where the rows are)."""

    def audit_summary(self, shadow: bool = False) -> dict[PositionKey, PartitionSummary]: ...

    def floor_breaches(self, limit: int = 10) -> list[tuple[str, int, int]]:
        """(account, balance, floor) of user and room accounts below their floor."""

    def balance_mismatches(self, shadow: bool = False,
                           limit: int = 10) -> list[tuple[str, int | None, int | None]]:
        """(account, balances.balance, sum of audit_log) where balance or count differ."""

    def account_count(self) -> int:
        """Rows of balances."""

    def close(self) -> None: ...

    def reconnect(self) -> None:
        """Open a fresh session after StoreUnavailableError."""

    def __enter__(self) -> ProjectionStore: ...

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None: ...
