"""The SQL both stores share; adapters supply connection, bulk load and dialect bits.

Statements use `?` placeholders (DuckDB's style); the Postgres adapter rewrites
them to psycopg's `%s` (doubling any `%`), so no statement may hold a literal `?`.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

import pyarrow as pa

from ledger.errors import JournalMismatchError
from projections.checksum import balance_checksum
from projections.store import (
    META_AS_OF,
    META_JOURNAL_CLUSTER,
    META_JOURNAL_PREFIX,
    META_STORE_ID,
    POSITION_SCHEMA,
    AccountRow,
    AuditRow,
    BalanceRow,
    Batch,
    JournalIdentity,
    PartitionSummary,
    PositionConflict,
    PositionKey,
    Snapshot,
)
from projections.views import create_views, drop_views

SHADOW = "__shadow"
LIVE_TABLES = ("accounts", "balances", "audit_log", "projection_positions")
EPOCH = datetime(1970, 1, 1)
ONE_MS = timedelta(milliseconds=1)
Row = tuple[Any, ...]

TABLE_DDL = {
    "accounts": """account VARCHAR PRIMARY KEY, type VARCHAR NOT NULL, floor BIGINT NOT NULL,
        status VARCHAR NOT NULL, opened_at TIMESTAMP, command_id VARCHAR""",
    "balances": """account VARCHAR PRIMARY KEY, balance BIGINT NOT NULL, type VARCHAR NOT NULL,
        postings BIGINT NOT NULL, updated_at TIMESTAMP""",
    "audit_log": """event_id VARCHAR NOT NULL, command_id VARCHAR NOT NULL, kind VARCHAR NOT NULL,
        posting INTEGER NOT NULL, account VARCHAR NOT NULL, amount BIGINT NOT NULL,
        actor VARCHAR NOT NULL, reason VARCHAR NOT NULL, occurred_at TIMESTAMP NOT NULL,
        reverses_event_id VARCHAR, topic VARCHAR NOT NULL, "partition" INTEGER NOT NULL,
        "offset" BIGINT NOT NULL""",
    "projection_positions": """topic VARCHAR NOT NULL, "partition" INTEGER NOT NULL,
        next_offset BIGINT NOT NULL, PRIMARY KEY (topic, "partition")""",
}
STAGING_DDL = {
    "stage_deltas": TABLE_DDL["balances"].replace(" PRIMARY KEY", ""),
    "stage_accounts": TABLE_DDL["accounts"].replace(" PRIMARY KEY", ""),
}
UPSERT_BALANCES = """INSERT INTO balances (account, balance, type, postings, updated_at)
    SELECT account, balance, type, postings, updated_at FROM stage_deltas
    ON CONFLICT (account) DO UPDATE SET balance = balances.balance + excluded.balance,
        postings = balances.postings + excluded.postings,
        updated_at = greatest(balances.updated_at, excluded.updated_at)"""
UPSERT_ACCOUNTS = """INSERT INTO accounts (account, type, floor, status, opened_at, command_id)
    SELECT account, type, floor, status, opened_at, command_id FROM stage_accounts
    ON CONFLICT (account) DO UPDATE SET type = excluded.type, floor = excluded.floor,
        status = excluded.status, opened_at = excluded.opened_at,
        command_id = excluded.command_id"""
SET_META = """INSERT INTO projection_meta VALUES (?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value"""
MOVE_POSITION = """UPDATE projection_positions SET next_offset = ?
    WHERE topic = ? AND "partition" = ? AND next_offset = ? RETURNING "partition" """
AUDIT_COLUMNS = """event_id, command_id, kind, posting, account, amount, actor, reason,
    occurred_at, reverses_event_id, topic, "partition", "offset" """
SUMMARY = """SELECT topic, "partition", count(*), sum(CASE WHEN posting = 0 THEN 1 ELSE 0 END),
    sum(amount), sum(abs(amount)), sum("offset") FROM audit_log{s} GROUP BY topic, "partition" """
FLOOR_BREACHES = """SELECT b.account, b.balance, coalesce(a.floor, 0)
    FROM balances b LEFT JOIN accounts a ON a.account = b.account
    WHERE coalesce(a.type, b.type) IN ('USER', 'ROOM') AND b.balance < coalesce(a.floor, 0)
    ORDER BY b.account LIMIT ?"""
MISMATCHES = """SELECT coalesce(b.account, s.account), b.balance, s.total
    FROM balances{s} b FULL OUTER JOIN
        (SELECT account, sum(amount) AS total, count(*) AS n FROM audit_log{s} GROUP BY account) s
        ON s.account = b.account
    WHERE b.balance IS DISTINCT FROM s.total OR b.postings IS DISTINCT FROM s.n
    ORDER BY 1 LIMIT ?"""


def to_ms(value: datetime | None) -> int | None:
    return None if value is None else (value - EPOCH) // ONE_MS


def _int(value: Any) -> int:
    return 0 if value is None else int(value)


class SqlProjectionStore(ABC):
    """ProjectionStore over a SQL connection; subclasses are the adapters."""

    _journal: JournalIdentity | None = None  # claimed through this object: claims check it

    # -- adapter primitives ---------------------------------------------------------------
    @property
    @abstractmethod
    def url(self) -> str: ...

    @property
    @abstractmethod
    def shared(self) -> bool: ...

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[None]:
        """One database transaction: commit on success, roll back on error."""

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement inside the current transaction; rows if it returns any."""

    @abstractmethod
    def _stream(self, sql: str) -> Iterator[Row]:
        """Rows of a query, fetched in chunks."""

    @abstractmethod
    def _insert_arrow(self, table: str, data: pa.Table) -> None:
        """Bulk-append an Arrow table whose column names match the target's."""

    def _lock_schema(self) -> None:  # noqa: B027 - an optional hook
        """Serialize schema changes between processes (Postgres); nothing by default."""

    def _index_ddl(self, shadow: bool) -> list[str]:
        """Secondary indexes, created after a bulk load; none by default."""
        return []

    def _swap_extra(self) -> list[str]:
        """Statements after the renames of a swap (e.g. index renames)."""
        return []

    def _claim_rebuild(self) -> None:  # noqa: B027 - an optional hook
        """Make sure no other process rebuilds this store meanwhile (Postgres)."""

    def _release_rebuild(self) -> None:  # noqa: B027 - an optional hook
        """End what _claim_rebuild began."""

    def _fast_bulk(self) -> None:  # noqa: B027 - an optional hook
        """Settings for a rebuild's bulk transactions (e.g. asynchronous commit)."""

    @abstractmethod
    def close(self) -> None: ...

    # -- schema ---------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        with self._transaction():
            self._lock_schema()
            for name in LIVE_TABLES:
                self._execute(f"CREATE TABLE IF NOT EXISTS {name} ({TABLE_DDL[name]})")
            self._execute("CREATE TABLE IF NOT EXISTS projection_meta "
                          "(key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
            self._execute("INSERT INTO projection_meta VALUES (?, ?) ON CONFLICT DO NOTHING",
                          (META_STORE_ID, uuid.uuid4().hex[:12]))
            for stmt in [*self._index_ddl(shadow=False), *create_views()]:
                self._execute(stmt)
        with self._transaction():
            for name, ddl in STAGING_DDL.items():
                self._execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} ({ddl})")

    def meta(self) -> dict[str, str]:
        with self._transaction():
            return {k: v for k, v in self._execute("SELECT key, value FROM projection_meta")}

    def store_id(self) -> str:
        return self.meta()[META_STORE_ID]

    # -- the journal projected ----------------------------------------------------------------
    def journal(self) -> JournalIdentity | None:
        with self._transaction():
            return self._recorded_journal()

    def claim_journal(self, journal: JournalIdentity) -> JournalIdentity:
        with self._transaction():
            self._lock_schema()
            held = self._recorded_journal()
            if held is None:
                self._record_journal(journal)
                held = journal
        if held.matches(journal):
            self._journal = journal
        return held

    def reset_projection(self, journal: JournalIdentity) -> None:
        with self._transaction():
            self._lock_schema()
            for name in LIVE_TABLES:
                self._execute(f"DELETE FROM {name}")
            self._execute("DELETE FROM projection_meta WHERE key <> ?", (META_STORE_ID,))
            self._record_journal(journal)
        self._journal = journal

    def _recorded_journal(self) -> JournalIdentity | None:
        meta: dict[str, str] = dict(self._execute(
            "SELECT key, value FROM projection_meta WHERE key IN (?, ?)",
            (META_JOURNAL_PREFIX, META_JOURNAL_CLUSTER)))
        if META_JOURNAL_PREFIX not in meta:
            return None
        return JournalIdentity(meta[META_JOURNAL_PREFIX], meta.get(META_JOURNAL_CLUSTER, ""))

    def _record_journal(self, journal: JournalIdentity) -> None:
        self._execute(SET_META, (META_JOURNAL_PREFIX, journal.prefix))
        self._execute(SET_META, (META_JOURNAL_CLUSTER, journal.cluster_id))

    def _check_journal(self) -> None:
        """Inside a claim's transaction: the store still projects the journal claimed."""
        if self._journal is None:
            return
        held = self._recorded_journal()
        if held is None or not held.matches(self._journal):
            raise JournalMismatchError(
                f"store {self.url} now projects {held or 'no journal'}, not {self._journal} "
                "(reset by another process?)")

    # -- positions and live batches ---------------------------------------------------------
    def positions(self, shadow: bool = False) -> dict[PositionKey, int]:
        table = f"projection_positions{shadow_suffix(shadow)}"
        sql = f'SELECT topic, "partition", next_offset FROM {table}'
        with self._transaction():
            return {(t, p): o for t, p, o in self._execute(sql)}

    def claim_positions(self, keys: Iterable[PositionKey]) -> dict[PositionKey, int]:
        wanted = set(keys)
        with self._transaction():
            self._check_journal()
            for topic, partition in sorted(wanted):
                self._execute("INSERT INTO projection_positions VALUES (?, ?, 0) "
                              "ON CONFLICT DO NOTHING", (topic, partition))
            rows = self._execute('SELECT topic, "partition", next_offset FROM projection_positions')
        return {(t, p): o for t, p, o in rows if (t, p) in wanted}

    def apply_batch(self, batch: Batch) -> None:
        with self._transaction():
            for (topic, partition), (expected, new) in sorted(batch.positions.items()):
                if not self._execute(MOVE_POSITION, (new, topic, partition, expected)):
                    raise PositionConflict(
                        f"position of {topic}[{partition}] is no longer {expected}: another "
                        "projector or a replay moved it")
            if batch.audit is not None and batch.audit.num_rows:
                self._insert_arrow("audit_log", batch.audit)
            self._upsert("stage_deltas", UPSERT_BALANCES, batch.deltas)
            self._upsert("stage_accounts", UPSERT_ACCOUNTS, batch.accounts)

    def _upsert(self, stage: str, upsert: str, data: pa.Table | None) -> None:
        if data is None or not data.num_rows:
            return
        self._insert_arrow(stage, data)
        self._execute(upsert)
        self._execute(f"DELETE FROM {stage}")

    # -- rebuild into shadow tables ---------------------------------------------------------
    def begin_rebuild(self) -> None:
        self._claim_rebuild()
        with self._transaction():
            self._lock_schema()
            for name in LIVE_TABLES:
                self._execute(f"DROP TABLE IF EXISTS {name}{SHADOW}")
                self._execute(f"CREATE TABLE {name}{SHADOW} ({TABLE_DDL[name]})")

    def append_rebuild(self, audit: pa.Table) -> None:
        with self._transaction():
            self._fast_bulk()
            self._insert_arrow(f"audit_log{SHADOW}", audit)

    def finish_rebuild(self, snapshot: Snapshot) -> None:
        positions = pa.table(
            [[t for t, _ in snapshot.positions], [p for _, p in snapshot.positions],
             list(snapshot.positions.values())], schema=POSITION_SCHEMA)
        with self._transaction():
            self._insert_arrow(f"accounts{SHADOW}", snapshot.accounts)
            self._insert_arrow(f"balances{SHADOW}", snapshot.balances)
            self._insert_arrow(f"projection_positions{SHADOW}", positions)
            for stmt in self._index_ddl(shadow=True):
                self._execute(stmt)

    def swap_rebuild(self, as_of: int | None, journal: JournalIdentity | None = None) -> None:
        with self._transaction():
            self._lock_schema()
            for stmt in drop_views():  # Postgres will not drop a table a view uses
                self._execute(stmt)
            for name in LIVE_TABLES:
                self._execute(f"DROP TABLE IF EXISTS {name}")
                self._execute(f"ALTER TABLE {name}{SHADOW} RENAME TO {name}")
            for stmt in [*self._swap_extra(), *create_views()]:
                self._execute(stmt)
            self._execute("DELETE FROM projection_meta WHERE key = ?", (META_AS_OF,))
            if as_of is not None:
                self._execute("INSERT INTO projection_meta VALUES (?, ?)", (META_AS_OF, str(as_of)))
            if journal is not None:
                self._record_journal(journal)
        self._release_rebuild()

    def abandon_rebuild(self) -> None:
        try:
            with self._transaction():
                for name in LIVE_TABLES:
                    self._execute(f"DROP TABLE IF EXISTS {name}{SHADOW}")
        finally:
            self._release_rebuild()

    # -- reads ----------------------------------------------------------------------------
    def balance(self, account: str) -> BalanceRow | None:
        with self._transaction():
            rows = self._execute("SELECT account, balance, type, postings, updated_at "
                                 "FROM balances WHERE account = ?", (account,))
        if not rows:
            return None
        a, b, t, n, u = rows[0]
        return BalanceRow(a, int(b), t, int(n), to_ms(u))

    def account(self, account: str) -> AccountRow | None:
        with self._transaction():
            rows = self._execute("SELECT account, type, floor, status, opened_at, command_id "
                                 "FROM accounts WHERE account = ?", (account,))
        if not rows:
            return None
        a, t, f, s, o, c = rows[0]
        return AccountRow(a, t, f, s, to_ms(o), c)

    def history(self, account: str, limit: int | None = None) -> list[AuditRow]:
        order = 'occurred_at {d}, topic {d}, "partition" {d}, "offset" {d}, posting {d}'
        sql = f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE account = ? "
        with self._transaction():
            if limit is None:
                rows = self._execute(sql + "ORDER BY " + order.format(d="ASC"), (account,))
            else:
                rows = self._execute(sql + "ORDER BY " + order.format(d="DESC") + " LIMIT ?",
                                     (account, limit))[::-1]
        return [_audit_row(r) for r in rows]

    def balance_pairs(self, shadow: bool = False) -> Iterator[tuple[str, int]]:
        sql = f"SELECT account, balance FROM balances{shadow_suffix(shadow)}"
        for account, balance in self._stream(sql):
            yield account, int(balance)

    def balance_checksum(self, shadow: bool = False) -> str:
        return balance_checksum(self.balance_pairs(shadow))

    def audit_summary(self, shadow: bool = False) -> dict[PositionKey, PartitionSummary]:
        with self._transaction():
            rows = self._execute(SUMMARY.format(s=shadow_suffix(shadow)))
        return {(t, p): PartitionSummary(*(_int(v) for v in rest)) for t, p, *rest in rows}

    def floor_breaches(self, limit: int = 10) -> list[tuple[str, int, int]]:
        with self._transaction():
            return [(a, int(b), int(f)) for a, b, f in self._execute(FLOOR_BREACHES, (limit,))]

    def balance_mismatches(self, shadow: bool = False,
                           limit: int = 10) -> list[tuple[str, int | None, int | None]]:
        with self._transaction():
            rows = self._execute(MISMATCHES.format(s=shadow_suffix(shadow)), (limit,))
        return [(a, None if b is None else int(b), None if t is None else int(t))
                for a, b, t in rows]

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[Row]:
        """Ad-hoc SQL in its own transaction (`?` placeholders), for tools and tests."""
        with self._transaction():
            return self._execute(query, params)

    def account_count(self) -> int:
        with self._transaction():
            return int(self._execute("SELECT count(*) FROM balances")[0][0])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _audit_row(r: Row) -> AuditRow:
    eid, cid, kind, posting, account, amount, actor, reason, at, rev, topic, part, off = r
    return AuditRow(eid, cid, kind, int(posting), account, int(amount), actor, reason,
                    to_ms(at) or 0, rev, topic, int(part), int(off))


def shadow_suffix(shadow: bool) -> str:
    return SHADOW if shadow else ""
