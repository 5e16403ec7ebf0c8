"""Postgres adapter: SQLAlchemy for connection and transactions, psycopg 3 COPY for bulk rows.

One connection per store object. Bulk rows go as CSV written by Arrow's C++
writer straight into `COPY ... FROM STDIN`; no per-row Python work.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, cast

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.pool import NullPool

from ledger.errors import StoreError, StoreUnavailableError
from projections.sql_store import SHADOW, Row, SqlProjectionStore

SCHEMA_LOCK_KEY = 0x1ED6E5  # pg_advisory_xact_lock key: serializes DDL between projectors
REBUILD_LOCK = "hashtext(current_schema() || '.ledger-rebuild')"  # one replay per schema
CHUNK = 10_000
CSV_OPTIONS = pacsv.WriteOptions(include_header=False, batch_size=CHUNK)
INDEXED = ("accounts", "balances", "projection_positions")
SPLIT_ROWS = 20_000  # a rebuild's audit appends at least this big go through two sessions


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable Postgres URL>"


class _CopySink:
    """A file-like object Arrow's CSV writer writes into a COPY stream."""

    def __init__(self, copy: psycopg.Copy) -> None:
        self.copy = copy
        self.closed = False

    def write(self, data: bytes) -> int:
        self.copy.write(data)
        return len(data)

    def flush(self) -> None:
        pass


class PostgresProjectionStore(SqlProjectionStore):
    """ProjectionStore in a Postgres database (postgresql+psycopg://user@host:port/db)."""

    def __init__(self, url: str) -> None:
        self._url = redact(url)
        self._rebuilding = False
        self._copier: Connection | None = None  # a second session for a rebuild's COPYs
        self._copy_thread: ThreadPoolExecutor | None = None
        try:
            self._engine = create_engine(url, poolclass=NullPool)
            self._conn: Connection = self._engine.connect()
        except (SQLAlchemyError, ImportError, ValueError) as e:
            raise StoreError(f"cannot reach Postgres at {self._url}: {_reason(e)}") from e

    @property
    def url(self) -> str:
        return self._url

    @property
    def shared(self) -> bool:
        return True

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            txn = self._conn.begin()
        except SQLAlchemyError as e:
            raise self._error(e) from e
        try:
            yield
        except BaseException:
            if txn.is_active:
                txn.rollback()
            raise
        try:
            txn.commit()
        except SQLAlchemyError as e:
            raise self._error(e) from e

    def _error(self, e: BaseException) -> StoreError:
        conn = getattr(self, "_conn", None)
        # A session closed by a failed reconnect is as unavailable as the server itself.
        if _connection_lost(e) or (conn is not None and (conn.closed or conn.invalidated)):
            return StoreUnavailableError(f"Postgres at {self._url} is unavailable: {_reason(e)}")
        return StoreError(f"Postgres store {self._url}: {_reason(e)}")

    def reconnect(self) -> None:
        """A fresh session after an outage (temp staging tables are per session)."""
        with suppress(SQLAlchemyError, psycopg.Error):
            self._conn.close()
        try:
            self._conn = self._engine.connect()
        except SQLAlchemyError as e:
            raise self._error(e) from e
        self.ensure_schema()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            res = self._conn.exec_driver_sql(_pyformat(sql), tuple(params))
            return [tuple(r) for r in res] if res.returns_rows else []
        except SQLAlchemyError as e:
            raise self._error(e) from e

    def _stream(self, sql: str) -> Iterator[Row]:
        with self._transaction():
            try:
                res = self._conn.exec_driver_sql(
                    sql, execution_options={"stream_results": True, "max_row_buffer": CHUNK})
                for row in res:
                    yield tuple(row)
            except SQLAlchemyError as e:
                raise self._error(e) from e

    def raw_connection(self) -> psycopg.Connection[Any]:
        """The session's psycopg connection, for `ledger query` (projections.query)."""
        return self._raw()

    def _raw(self) -> psycopg.Connection[Any]:
        return cast(psycopg.Connection[Any], self._conn.connection.driver_connection)

    def _insert_arrow(self, table: str, data: pa.Table,
                      conn: psycopg.Connection[Any] | None = None) -> None:
        cols = ", ".join(f'"{c}"' for c in data.column_names)
        try:
            with (conn or self._raw()).cursor() as cur, \
                    cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT csv)") as copy:
                pacsv.write_csv(data, _CopySink(copy), CSV_OPTIONS)
        except (psycopg.Error, pa.ArrowException) as e:
            raise self._error(e) from e

    def append_rebuild(self, audit: pa.Table) -> None:
        """Half the rows through a second session, concurrently: parsing COPY input is the
        server's bottleneck, and one session parses on one core (2M rows here: 6.2 s on
        one session, ~4.9 s on two). The shadow table is invisible until the swap, so the
        halves need not share a transaction; a failure abandons the whole rebuild."""
        if self._copier is None or self._copy_thread is None or audit.num_rows < SPLIT_ROWS:
            super().append_rebuild(audit)
            return
        half = audit.num_rows // 2
        other = self._copy_thread.submit(self._append_on_copier, audit.slice(half))
        try:
            super().append_rebuild(audit.slice(0, half))
        finally:
            other.result()

    def _append_on_copier(self, rows: pa.Table) -> None:
        assert self._copier is not None
        try:
            with self._copier.begin():
                raw = cast(psycopg.Connection[Any], self._copier.connection.driver_connection)
                raw.execute("SET LOCAL synchronous_commit TO off")
                self._insert_arrow(f"audit_log{SHADOW}", rows, raw)
        except (SQLAlchemyError, psycopg.Error) as e:
            raise self._error(e) from e

    def _lock_schema(self) -> None:
        self._execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")

    def _index_ddl(self, shadow: bool) -> list[str]:
        name = "audit_log" + (SHADOW if shadow else "")
        return [f"CREATE INDEX IF NOT EXISTS {name}_account_idx ON {name} (account)"]

    def _swap_extra(self) -> list[str]:
        renames = [f"ALTER INDEX {t}{SHADOW}_pkey RENAME TO {t}_pkey" for t in INDEXED]
        idx = "audit_log_account_idx"
        return [*renames, f"ALTER INDEX audit_log{SHADOW}_account_idx RENAME TO {idx}"]

    def _claim_rebuild(self) -> None:
        # A session-level lock: held across the rebuild's many transactions.
        with self._transaction():
            (ok,) = self._execute(f"SELECT pg_try_advisory_lock({REBUILD_LOCK})")[0]
        if not ok:
            raise StoreError(f"another replay is rebuilding {self._url} right now")
        self._rebuilding = True
        try:
            self._copier = self._engine.connect()
        except SQLAlchemyError as e:
            self._release_rebuild()
            raise self._error(e) from e
        self._copy_thread = ThreadPoolExecutor(1, thread_name_prefix="pg-copy")

    def _release_rebuild(self) -> None:
        if self._copy_thread is not None:
            self._copy_thread.shutdown()
            self._copy_thread = None
        if self._copier is not None:
            with suppress(SQLAlchemyError, psycopg.Error):
                self._copier.close()
            self._copier = None
        if self._rebuilding:
            with self._transaction():
                self._execute(f"SELECT pg_advisory_unlock({REBUILD_LOCK})")
            self._rebuilding = False

    def _fast_bulk(self) -> None:
        # Shadow rows need no durability before the swap commits; this drops a WAL flush
        # per batch. A crash loses nothing a new replay would not rebuild anyway.
        self._execute("SET LOCAL synchronous_commit TO off")

    def close(self) -> None:
        try:
            self._conn.close()
        finally:
            self._engine.dispose()


def _connection_lost(e: BaseException) -> bool:
    """The server or the connection is gone, as opposed to a statement that failed."""
    if isinstance(e, DBAPIError) and e.connection_invalidated:
        return True
    orig = e.orig if isinstance(e, DBAPIError) and e.orig is not None else e
    return isinstance(e, OperationalError | InterfaceError) or isinstance(
        orig, psycopg.OperationalError | psycopg.InterfaceError)


def _reason(e: BaseException) -> str:
    orig = e.orig if isinstance(e, DBAPIError) and e.orig is not None else e
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def _pyformat(sql: str) -> str:
    """Shared `?` placeholders to psycopg's `%s`; a literal `%` (LIKE 'a%') is doubled."""
    return sql.replace("%", "%%").replace("?", "%s")
