"""`ledger query`: one ad-hoc read-only statement over a store, and nothing beyond it.

DuckDB (the guarantee is DuckDB's own): the file is opened read-only with external
access off (no file reads or writes besides the store, no ATTACH, no COPY, no
INSTALL or LOAD, no secrets), extension autoloading off, and the configuration
locked (no SET, RESET or PRAGMA that changes a setting).

Postgres (the guarantee is the role's): the statement runs alone, as a cursor's query
(a SELECT, TABLE, VALUES or WITH; the extended query protocol: never a script), in a
READ ONLY transaction that is rolled back, under a statement_timeout (for its DECLARE
and for each FETCH of rows), and only as a role that is neither a superuser, nor a
member of one, nor of pg_read_server_files, pg_write_server_files or
pg_execute_server_program; other roles are refused before anything runs. What such a
role may still do (functions granted to it, dblink where installed) is the database's
grants: give the role SELECT on the ledger's tables and nothing else.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from ledger.errors import QueryError
from projections.factory import sqlalchemy_url, store_kind

Row = tuple[Any, ...]
CHUNK = 10_000
# DuckDB settings of a query's connection; lock_configuration last: nothing changes after.
DUCKDB_SANDBOX = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "lock_configuration": True,
}
# Postgres statements that only read (anything else is refused before it is sent).
READING = ("select", "with", "values", "table")
FILE_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program")
PRIVILEGED = f"""SELECT string_agg(rolname, ', ' ORDER BY rolname) FROM pg_roles
    WHERE (rolsuper OR rolname IN ({", ".join(f"'{r}'" for r in FILE_ROLES)}))
    AND pg_has_role(current_user, oid, 'MEMBER')"""
_LEADING = re.compile(r"\s+|--[^\n]*|/\*.*?\*/|\(", re.DOTALL)


@dataclass
class QueryResult:
    """Column names (none for a statement without rows) and the rows, streamed."""

    names: list[str]
    rows: Iterator[Row]


@contextmanager
def run_query(url: str, sql: str, timeout_s: float) -> Iterator[QueryResult]:
    """Run sql against the store at url; rows stream while the context is open."""
    runner = _duckdb if store_kind(url) == "duckdb" else _postgres
    with runner(url, sql, timeout_s) as result:
        yield result


@contextmanager
def _duckdb(url: str, sql: str, timeout_s: float) -> Iterator[QueryResult]:
    import duckdb

    from projections.duckdb_store import DuckDBProjectionStore

    def explain(e: Exception) -> QueryError:
        if isinstance(e, duckdb.InterruptException):
            return QueryError(f"query stopped after --timeout {timeout_s:g}s")
        if isinstance(e, duckdb.PermissionException) or "configuration has been locked" in str(e):
            return QueryError(f"query refused, it may read the store only: {one_line(e)}")
        return QueryError(f"query failed: {one_line(e)}")

    with DuckDBProjectionStore(url, read_only=True, config=DUCKDB_SANDBOX) as store:
        con = store.connection
        timer = threading.Timer(timeout_s, con.interrupt)
        timer.daemon = True
        timer.start()
        try:
            try:
                cur = con.execute(sql)
            except duckdb.Error as e:
                raise explain(e) from e
            names = [d[0] for d in cur.description] if cur.description else []
            yield QueryResult(names, _guarded(lambda: cur.fetchmany(CHUNK), duckdb.Error,
                                              explain))
        finally:
            timer.cancel()


@contextmanager
def _postgres(url: str, sql: str, timeout_s: float) -> Iterator[QueryResult]:
    import psycopg

    from projections.postgres_store import PostgresProjectionStore

    word = first_word(sql)
    if word not in READING:
        raise QueryError(f"query refused: {word.upper() or 'an empty statement'} does not only "
                         f"read; a Postgres store takes {', '.join(w.upper() for w in READING)}")

    def explain(e: Exception) -> QueryError:
        if isinstance(e, psycopg.errors.QueryCanceled):
            return QueryError(f"query stopped after --timeout {timeout_s:g}s")
        return QueryError(f"query failed: {one_line(e)}")

    with PostgresProjectionStore(sqlalchemy_url(url)) as store:
        conn = store.raw_connection()
        try:
            conn.rollback()
            conn.read_only = True  # every transaction psycopg begins: BEGIN READ ONLY
            (privileged,) = conn.execute(PRIVILEGED, prepare=False).fetchone() or (None,)
            if privileged:
                raise QueryError(
                    f"query refused: the role of {store.url} may read or write the server's "
                    f"files (member of {privileged}); connect `ledger query` as a role that "
                    "may only SELECT the ledger's tables")
            conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
            # A server-side cursor: DECLARE goes by the extended protocol (one statement,
            # never a script) and takes only a SELECT, TABLE, VALUES or WITH; rows stream.
            cur = conn.cursor(name="ledger_query")
            cur.itersize = CHUNK
            try:
                cur.execute(sql)
            except psycopg.Error as e:
                raise explain(e) from e
            names = [d.name for d in cur.description] if cur.description else []
            yield QueryResult(names, _guarded(lambda: cur.fetchmany(CHUNK), psycopg.Error,
                                              explain))
        except psycopg.Error as e:
            raise QueryError(f"query failed: {one_line(e)}") from e
        finally:
            with suppress(psycopg.Error):  # a stream left unread: closing the store ends it
                conn.rollback()


def _guarded(fetch: Callable[[], list[Row]], error: type[Exception],
             explain: Callable[[Exception], QueryError]) -> Iterator[Row]:
    """Rows chunk by chunk; a failure while fetching becomes the same one-line error."""
    while True:
        try:
            rows = fetch()
        except error as e:
            raise explain(e) from e
        if not rows:
            return
        yield from rows


def first_word(sql: str) -> str:
    """The statement's first keyword, lower case, past comments and parentheses."""
    pos = 0
    while match := _LEADING.match(sql, pos):
        pos = match.end()
    word = re.match(r"[A-Za-z_]*", sql[pos:])
    return word.group(0).lower() if word else ""


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."

