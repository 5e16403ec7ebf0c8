"""DuckDB adapter: the embedded default store (duckdb:///path.duckdb).

DuckDB allows one writing process per file; readers in the same process share
the database instance (duckdb.connect of the same path) and see committed
transactions only, so a replay's swap is atomic for them too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ledger.errors import StoreError, UsageError
from projections.sql_store import Row, SqlProjectionStore, shadow_suffix
from projections.store import Snapshot

SCHEME = "duckdb://"
# DuckDB's buffer pool, unless the URL sets memory_limit. Live use (projector, queries):
# room for the primary-key indexes of ~1M+ accounts (their build needs ~100 B a key).
DEFAULT_MEMORY_LIMIT = "512MB"
# A rebuild's pool: keeps a long replay's memory flat (32 MB: ~35 MB less resident than 64
# here, inserts as fast). The accounts' and balances' primary-key indexes are built in
# memory at the end (~100 B a key): with 32 MB they failed at some 300k accounts, so the
# limit grows by KEY_MEMORY per key then. Back to the store's own after the swap: with 512
# MB throughout, committing and checking a 10M-event load took 100 MB more.
LOAD_MEMORY_MB = 32
KEY_MEMORY = 128
CHUNK = 10_000
CHECKSUM_SQL = """SELECT printf('%016x', (coalesce(sum(
    ('0x' || sha256(account || chr(0) || balance::VARCHAR)[1:16])::UBIGINT::HUGEINT), 0)
    % 18446744073709551616)::UBIGINT) FROM balances{s}"""


def duckdb_path(url: str) -> str:
    """The file of duckdb:///relative/or//absolute.duckdb (query string removed)."""
    if not url.startswith(SCHEME + "/"):
        raise StoreError(f"not a DuckDB store URL (duckdb:///FILE.duckdb): {url}")
    path = url[len(SCHEME) + 1:].split("?", 1)[0]
    if not path:
        raise StoreError(f"DuckDB store URL names no file: {url}")
    return path if path == ":memory:" else str(Path(path))


def _options(url: str) -> dict[str, str]:
    if "?" not in url:
        return {}
    pairs = (p.split("=", 1) for p in url.split("?", 1)[1].split("&") if p)
    return {k: v for k, v in (p if len(p) == 2 else (p[0], "") for p in pairs)}


class DuckDBProjectionStore(SqlProjectionStore):
    """ProjectionStore in one DuckDB file. Options in the URL query: memory_limit, threads."""

    def __init__(self, url: str, read_only: bool = False,
                 config: Mapping[str, Any] | None = None) -> None:
        self._url = url
        self.path = duckdb_path(url)
        self.read_only = read_only
        chosen: dict[str, Any] = {**_options(url), **(config or {})}
        conf = chosen if read_only else {"memory_limit": DEFAULT_MEMORY_LIMIT, **chosen}
        self._threads_chosen = "threads" in chosen
        self._memory_chosen = "memory_limit" in chosen
        self._threads: int | None = None  # DuckDB's own while a rebuild runs with fewer
        self._memory: str | None = None  # the pool's limit while a rebuild loads with less
        self._loading = False  # a rebuild's one shadow-load transaction is open
        self._con = self._connect(conf)
        self._lock = threading.RLock()

    def _connect(self, conf: dict[str, Any]) -> duckdb.DuckDBPyConnection:
        if self.read_only and self.path != ":memory:" and not Path(self.path).exists():
            raise StoreError(f"no DuckDB store at {self.path}: run `ledger project` or "
                             "`ledger replay` first")
        parent = Path(self.path).parent
        if self.path != ":memory:" and not parent.is_dir():
            raise UsageError(f"no directory {parent} for the DuckDB store {self.path} "
                             "(duckdb:///rel/path is relative, duckdb:////abs/path absolute)")
        try:
            return duckdb.connect(self.path, read_only=self.read_only, config=conf)
        except duckdb.IOException as e:
            raise StoreError(f"cannot open DuckDB store {self.path}: {_first_line(e)} "
                             "(is another process, e.g. a projector, writing it?)") from e
        except duckdb.Error as e:
            raise StoreError(f"cannot open DuckDB store {self.path}: {_first_line(e)}") from e

    @property
    def url(self) -> str:
        return self._url

    @property
    def shared(self) -> bool:
        return False  # one writing process per file

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The raw connection, for `ledger query` (read-only stores only)."""
        return self._con

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            if self.read_only or self._loading:
                yield  # read-only: nothing to commit; loading: part of the rebuild's load
                return
            self._run(self._con.begin)
            try:
                yield
            except BaseException:
                self._con.rollback()
                raise
            self._run(self._con.commit)

    def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except duckdb.Error as e:
            raise StoreError(f"DuckDB store {self.path}: {_first_line(e)}") from e

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        def run() -> list[Row]:
            cur = self._con.execute(sql, list(params))
            return cur.fetchall() if cur.description else []

        return list(self._run(run))

    def _stream(self, sql: str) -> Iterator[Row]:
        with self._lock:
            cur = self._run(self._con.cursor)
            try:
                self._run(cur.execute, sql)
                while rows := self._run(cur.fetchmany, CHUNK):
                    yield from rows
            finally:
                cur.close()

    def _insert_arrow(self, table: str, data: pa.Table) -> None:
        # A relation, not con.register: a registered table stays referenced until the
        # transaction ends, and a rebuild's load is one transaction (all of its Arrow).
        cols = ", ".join(f'"{c}"' for c in data.column_names)
        rel = self._run(self._con.from_arrow, data)
        self._run(rel.query, "_arrow_in",
                  f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _arrow_in")

    def begin_rebuild(self) -> None:
        """Shadow tables, then one transaction for all of their load, to finish_rebuild.

        Appends in one transaction are written to the file a row group at a time whatever
        their size; appends committed one by one leave partial row groups that DuckDB's
        checkpoint rewrites (2.3 s of a 1M-event replay here) unless each ends on a row
        group boundary, which would mean holding rows back. The shadow tables are
        invisible to readers until the swap anyway."""
        super().begin_rebuild()
        with self._lock:
            self._run(self._con.begin)
            self._loading = True

    def finish_rebuild(self, snapshot: Snapshot) -> None:
        if self._memory is not None:
            keys = snapshot.accounts.num_rows + snapshot.balances.num_rows
            mb = LOAD_MEMORY_MB + keys * KEY_MEMORY // 2**20
            with self._lock:
                self._run(self._con.execute, f"SET memory_limit = '{mb}MB'")
        super().finish_rebuild(snapshot)
        with self._lock:
            self._loading = False
            self._run(self._con.commit)

    def abandon_rebuild(self) -> None:
        with self._lock:
            if self._loading:
                self._loading = False
                # The failure that brought us here may have ended the transaction already.
                with suppress(duckdb.Error):
                    self._con.rollback()
        super().abandon_rebuild()

    def balance_checksum(self, shadow: bool = False) -> str:
        """checksum.balance_checksum in SQL: a sum of the first 8 bytes of each row's
        sha256, modulo 2**64 (~5x faster than streaming the rows to Python)."""
        with self._transaction():
            (value,) = self._execute(CHECKSUM_SQL.format(s=shadow_suffix(shadow)))[0]
        return str(value)

    def _claim_rebuild(self) -> None:
        """Bulk inserts on fewer threads than cores, and a small pool for the audit load.

        On two cores, DuckDB's two insert threads fighting the decoding thread made a 1M
        replay ~35% slower here than one insert thread. Settings chosen in the URL stay."""
        if self.read_only:
            return
        with self._lock:
            if not self._threads_chosen:
                self._threads = int(self._setting("threads"))
                self._run(self._con.execute, f"SET threads = {rebuild_threads()}")
            if not self._memory_chosen:
                self._memory = self._setting("memory_limit")
                self._run(self._con.execute, f"SET memory_limit = '{LOAD_MEMORY_MB}MB'")

    def _setting(self, name: str) -> str:
        (value,) = self._run(self._con.execute, f"SELECT current_setting('{name}')").fetchone()
        return str(value)

    def _release_rebuild(self) -> None:
        if self._memory is not None:
            with self._lock:
                self._run(self._con.execute, f"SET memory_limit = '{self._memory}'")
            self._memory = None
        if self._threads is not None:
            with self._lock:
                self._run(self._con.execute, f"SET threads = {self._threads}")
            self._threads = None

    def close(self) -> None:
        self._con.close()

    def reconnect(self) -> None:
        """Embedded: there is no server to lose."""


def rebuild_threads() -> int:
    """DuckDB threads during a rebuild: every core but one, at least one."""
    return max(1, (os.cpu_count() or 1) - 1)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
