"""open_store(url): the one place that turns a store URL into an adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledger.errors import StoreError, UsageError
from projections.store import ProjectionStore

if TYPE_CHECKING:
    from projections.duckdb_store import DuckDBProjectionStore
    from projections.sql_store import SqlProjectionStore


def store_kind(url: str) -> str:
    """'duckdb' or 'postgres'; UsageError for anything else."""
    if url.startswith("duckdb:"):
        return "duckdb"
    if url.startswith(("postgresql", "postgres:")):
        return "postgres"
    raise UsageError(f"unsupported store URL {url.split('@')[-1]!r}: expected "
                     "duckdb:///FILE.duckdb or postgresql+psycopg://USER@HOST:PORT/DB")


def sqlalchemy_url(url: str) -> str:
    """A Postgres URL as SQLAlchemy takes it (postgres:// is psycopg's spelling)."""
    return url.replace("postgres://", "postgresql+psycopg://", 1) \
        if url.startswith("postgres://") else url


def open_store(url: str, read_only: bool = False) -> ProjectionStore:
    """An open store with its tables created (unless read_only)."""
    # Each driver is imported when its store is opened: a DuckDB replay does not carry
    # SQLAlchemy and psycopg (~20 MB resident) and the other way round.
    store: SqlProjectionStore
    if store_kind(url) == "duckdb":
        from projections.duckdb_store import DuckDBProjectionStore

        store = DuckDBProjectionStore(url, read_only=read_only)
    else:
        from projections.postgres_store import PostgresProjectionStore

        store = PostgresProjectionStore(sqlalchemy_url(url))
    if not read_only:
        try:
            store.ensure_schema()
        except StoreError:
            store.close()
            raise
    return store


def open_duckdb(path: str, read_only: bool = False) -> DuckDBProjectionStore:
    """A DuckDB store at a file path (replay --out, ledger query)."""
    from projections.duckdb_store import DuckDBProjectionStore

    store = DuckDBProjectionStore(f"duckdb:///{path}", read_only=read_only)
    if not read_only:
        store.ensure_schema()
    return store
