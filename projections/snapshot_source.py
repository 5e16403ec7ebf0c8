"""Consistent reads of a live store for snapshots and exports: one transaction, Arrow out.

Every read of one StoreReader sees the same moment of the store, so the positions it
reads are exactly the positions of the rows it reads (the projector commits rows and
positions together):
- DuckDB: one read transaction on a connection. Either a connection of the projector's
  own database instance (a cursor: the projector keeps writing while it is read; DuckDB's
  MVCC keeps this transaction's view), or the file opened read-only when no process
  writes it (DuckDB lets no other process open a file one process writes).
- Postgres: one REPEATABLE READ, READ ONLY transaction; rows leave the server as CSV
  (`COPY (query) TO STDOUT`) parsed by Arrow's C++ reader, no per-row Python work.
"""

from __future__ import annotations

import contextlib
import io
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pacsv

from ledger.errors import StoreError
from ledger.settings import Tuning
from projections.factory import store_kind
from projections.store import (
    ACCOUNT_SCHEMA,
    AUDIT_SCHEMA,
    BALANCE_SCHEMA,
    POSITION_SCHEMA,
    PositionKey,
)

if TYPE_CHECKING:
    import duckdb
    import psycopg

TABLE_SCHEMAS = {"accounts": ACCOUNT_SCHEMA, "balances": BALANCE_SCHEMA,
                 "audit_log": AUDIT_SCHEMA, "projection_positions": POSITION_SCHEMA}
META_SCHEMA = pa.schema([("key", pa.string()), ("value", pa.string())])


class StoreLocked(StoreError):
    """A DuckDB store another process has open for writing (a projector, say)."""


def columns(schema: pa.Schema) -> str:
    return ", ".join(f'"{name}"' for name in schema.names)


def sql_text(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


class StoreReader(ABC):
    """One read transaction over a store; `started_ms` is when it began (epoch ms)."""

    url: str
    started_ms: int
    prunes_by_offset = False  # does a filter on "offset" skip stored rows (DuckDB zonemaps)?

    @abstractmethod
    def read(self, sql: str, schema: pa.Schema) -> pa.RecordBatchReader:
        """The rows of a query as Arrow batches of `schema` (column order as selected).
        Consume each reader before the next read."""

    @abstractmethod
    def interrupt(self) -> None:
        """Stop a read in progress (from another thread)."""

    @abstractmethod
    def close(self) -> None:
        """End the transaction."""

    def table(self, name: str, where: str = "") -> pa.RecordBatchReader:
        schema = TABLE_SCHEMAS[name]
        return self.read(f"SELECT {columns(schema)} FROM {name} {where}", schema)

    def positions(self) -> dict[PositionKey, int]:
        rows = self.table("projection_positions").read_all().to_pylist()
        return {(r["topic"], r["partition"]): r["next_offset"] for r in rows}

    def meta(self) -> dict[str, str]:
        rows = self.read("SELECT key, value FROM projection_meta", META_SCHEMA).read_all()
        return dict(zip(rows.column("key").to_pylist(), rows.column("value").to_pylist(),
                        strict=True))

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cast(reader: pa.RecordBatchReader, schema: pa.Schema) -> pa.RecordBatchReader:
    """Batches renamed and cast to schema (DuckDB hands out microsecond timestamps)."""
    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield batch.cast(schema, safe=False)

    return pa.RecordBatchReader.from_batches(schema, batches())


class DuckDBReader(StoreReader):
    """A read transaction on a DuckDB connection (see the module's docstring)."""

    prunes_by_offset = True

    def __init__(self, con: duckdb.DuckDBPyConnection, url: str, owned: bool,
                 batch_rows: int = Tuning.snapshot_batch_rows) -> None:
        self.url = url
        self._con = con
        self._owned = owned  # a file this reader opened (closed with it)
        self.batch_rows = batch_rows  # rows per Arrow batch read
        self.started_ms = int(time.time() * 1000)
        con.execute("BEGIN TRANSACTION")
        # DuckDB starts a transaction's view at its first read: take it now.
        con.execute("SELECT count(*) FROM projection_positions").fetchall()

    @classmethod
    def of_projector(cls, store: Any,
                     batch_rows: int = Tuning.snapshot_batch_rows) -> DuckDBReader:
        """A reader beside the live projector's connection (same database instance)."""
        return cls(store.connection.cursor(), store.url, owned=False, batch_rows=batch_rows)

    @classmethod
    def of_file(cls, path: str, url: str,
                batch_rows: int = Tuning.snapshot_batch_rows) -> DuckDBReader:
        """The file opened read-only; StoreLocked while another process writes it."""
        import duckdb

        if not Path(path).exists():
            raise StoreError(f"no DuckDB store at {path}: run `ledger project` or `ledger "
                             "replay` first")
        try:
            con = duckdb.connect(path, read_only=True, config={"memory_limit": "64MB"})
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise StoreLocked(f"DuckDB store {path} is open for writing by another "
                                  "process") from e
            raise StoreError(f"cannot open DuckDB store {path}: {_first_line(e)}") from e
        except duckdb.Error as e:
            raise StoreError(f"cannot open DuckDB store {path}: {_first_line(e)}") from e
        try:
            return cls(con, url, owned=True, batch_rows=batch_rows)
        except duckdb.Error as e:
            con.close()
            raise StoreError(f"DuckDB store {path} is not a ledger store: {_first_line(e)}") \
                from e

    def read(self, sql: str, schema: pa.Schema) -> pa.RecordBatchReader:
        import duckdb

        try:
            return _cast(self._con.sql(sql).to_arrow_reader(self.batch_rows), schema)
        except duckdb.Error as e:
            raise StoreError(f"reading DuckDB store {self.url}: {_first_line(e)}") from e

    def interrupt(self) -> None:
        self._con.interrupt()

    def close(self) -> None:
        import duckdb

        with contextlib.suppress(duckdb.Error):  # an interrupted one is over already
            self._con.execute("ROLLBACK")
        self._con.close()


class _CopyStream(io.RawIOBase):
    """A COPY ... TO STDOUT as a readable file, for Arrow's CSV reader."""

    def __init__(self, copy: psycopg.Copy, first: bytes) -> None:
        self._copy = copy
        self._buf = first

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            chunk = self._copy.read()
            if not chunk:
                return 0
            self._buf = bytes(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class PostgresReader(StoreReader):
    """One REPEATABLE READ, READ ONLY transaction on its own session."""

    def __init__(self, url: str) -> None:
        import psycopg

        from projections.postgres_store import PostgresProjectionStore

        self._store = PostgresProjectionStore(url)
        self.url = self._store.url
        self._conn = self._store.raw_connection()
        try:
            self._conn.rollback()
            self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self._conn.read_only = True
            self.started_ms = int(time.time() * 1000)
            self._conn.execute("SELECT count(*) FROM projection_positions").fetchall()
        except psycopg.Error as e:
            self._store.close()
            raise StoreError(f"reading Postgres store {self.url}: {_first_line(e)}") from e

    def read(self, sql: str, schema: pa.Schema) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(schema, self._batches(sql, schema))

    def _batches(self, sql: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        import psycopg

        options = (
            pacsv.ReadOptions(column_names=schema.names, block_size=1 << 22),
            pacsv.ParseOptions(newlines_in_values=True),
            pacsv.ConvertOptions(column_types=schema, strings_can_be_null=True,
                                 quoted_strings_can_be_null=False))
        try:
            with self._conn.cursor() as cur, \
                    cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
                first = bytes(copy.read())
                if not first:  # no rows: Arrow's reader refuses an empty file
                    return
                yield from pacsv.open_csv(io.BufferedReader(_CopyStream(copy, first)),
                                            *options)
        except (psycopg.Error, pa.ArrowException) as e:
            raise StoreError(f"reading Postgres store {self.url}: {_first_line(e)}") from e

    def interrupt(self) -> None:
        self._conn.cancel_safe()

    def close(self) -> None:
        import psycopg

        with contextlib.suppress(psycopg.Error):
            self._conn.rollback()
        self._store.close()


def open_reader(url: str, batch_rows: int = Tuning.snapshot_batch_rows) -> StoreReader:
    """A reader of the store at url; StoreLocked for a DuckDB file another process writes.
    `batch_rows`: rows per Arrow batch read of a DuckDB store."""
    if store_kind(url) == "postgres":
        return PostgresReader(url.replace("postgres://", "postgresql+psycopg://", 1)
                              if url.startswith("postgres://") else url)
    from projections.duckdb_store import duckdb_path

    path = duckdb_path(url)
    return DuckDBReader.of_file(path, url, batch_rows)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
