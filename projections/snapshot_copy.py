"""A full snapshot of a DuckDB store as a copy of its file: no row is read or re-inserted.

Reading every row through Arrow into a new file costs what a replay costs (10M events:
67 s here inside a running projector, against 3 s for the incremental snapshot that
follows). A copy of the store's file costs what the disk does. It is consistent when
nothing writes the file meanwhile: in the projector, between batches, after a CHECKPOINT
(the projector waits for the copy); in `ledger snapshot`, while its read-only connection
keeps every writer out, provided no write-ahead log waits to be replayed. The copy,
beside --out, then becomes a snapshot like any other (its own store_id, the snapshot
keys in projection_meta, the views) and is renamed over --out.
"""

from __future__ import annotations

import logging
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from ledger.errors import StoreError
from projections.duckdb_store import DuckDBProjectionStore
from projections.snapshot import (
    COPIED_META,
    MEMORY_LIMIT,
    META_OF,
    SnapshotResult,
    check_totals,
    count,
    held_tails,
    publish,
    read_previous,
    write_meta,
)
from projections.sql_store import LIVE_TABLES, SHADOW
from projections.store import META_STORE_ID, PositionKey

LOG = logging.getLogger("ledger.snapshot")
# An incremental snapshot inserts each new audit row (a few us a row); a copy costs the
# file. At 10M events a copy took ~4 s here, an incremental one 3-7 s with nothing new and
# 35-44 s with 4-5M events new: past a tenth as many new records, copy.
INCREMENTAL_SHARE = 0.10


def previous_problem(out: Path, store_id: str, positions: dict[PositionKey, int]) -> str:
    """Why the file at out should not start an incremental snapshot of this store ('' if it
    may; the incremental snapshot checks the rest): none there, another store's, or so far
    behind that copying the store's file costs less than inserting what is new."""
    if not out.exists():
        return "no previous snapshot"
    previous = read_previous(out)
    if previous is None:
        return "the previous snapshot is open for writing"
    meta, held = previous
    if meta.get(META_OF) != store_id:
        return "the previous snapshot is of another store"
    new = sum(max(0, o - held.get(k, 0)) for k, o in positions.items())
    if new > INCREMENTAL_SHARE * max(sum(held.values()), 1):
        return f"{new} records since the previous snapshot: copying the store costs less"
    return ""


def copy_file(src: str, dst: Path) -> None:
    """Copy a store's file in a child process. Not in this one: closing any descriptor of a
    file drops every POSIX lock this process holds on it, DuckDB's included, and would let
    another process open the store for writing while it is written here."""
    done = subprocess.run(["cp", "--", src, str(dst)], capture_output=True, text=True)
    if done.returncode != 0:
        dst.unlink(missing_ok=True)
        raise StoreError(f"cannot copy {src}: {done.stderr.strip() or done.returncode}")


def temp_beside(out: Path) -> Path:
    return out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")


def copy_live(con: duckdb.DuckDBPyConnection, store_path: str, out: Path) -> Path | None:
    """On the projector's thread, between batches: checkpoint and copy the store's file
    beside out. The projector writes nothing until this returns."""
    tmp = temp_beside(out)
    started = time.monotonic()
    try:
        con.execute("CHECKPOINT")
    except duckdb.Error as e:  # e.g. another transaction open: read the rows instead
        LOG.warning("snapshot %s: cannot checkpoint the store (%s); reading its rows", out, e)
        return None
    copy_file(store_path, tmp)
    LOG.info("snapshot %s: store file copied in %.2fs", out, time.monotonic() - started)
    return tmp


def copy_idle(store_path: str, out: Path) -> Path | None:
    """The store's file copied beside out, while the caller's read-only connection keeps
    writers out; None if a write-ahead log is there (its changes are not in the file)."""
    wal = Path(store_path + ".wal")
    if wal.exists() and wal.stat().st_size > 0:
        return None
    tmp = temp_beside(out)
    copy_file(store_path, tmp)
    return tmp


def snapshot_from_copy(tmp: Path, out: Path, taken_ms: int, source_url: str,
                       threads: int | None = None) -> SnapshotResult:
    """Turn a copy of the store's file (beside out) into a snapshot, renamed over out."""
    started = time.monotonic()
    config: dict[str, object] = {"memory_limit": MEMORY_LIMIT}
    if threads is not None:
        config["threads"] = threads
    try:
        with DuckDBProjectionStore(f"duckdb:///{tmp}", config=config) as target:
            target.ensure_schema()
            con = target.connection
            con.execute("BEGIN TRANSACTION")
            try:
                for name in LIVE_TABLES:  # an interrupted replay's, if any
                    con.execute(f"DROP TABLE IF EXISTS {name}{SHADOW}")
                meta = dict(con.execute("SELECT key, value FROM projection_meta").fetchall())
                positions = {(t, p): o for t, p, o in con.execute(
                    'SELECT topic, "partition", next_offset FROM projection_positions')
                    .fetchall()}
                con.execute("UPDATE projection_meta SET value = ? WHERE key = ?",
                            [uuid.uuid4().hex[:12], META_STORE_ID])
                write_meta(con, taken_ms, source_url, meta, held_tails(con, None))
                check_totals(con, incremental=False)
                rows, accounts = count(con, "audit_log"), count(con, "balances")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("CHECKPOINT")
        size = tmp.stat().st_size
        publish(tmp, out)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return SnapshotResult(out=str(out), mode="full", taken_at_ms=taken_ms, positions=positions,
                          audit_rows=rows, rows_added=rows, accounts=accounts,
                          seconds=time.monotonic() - started, bytes=size,
                          journal={k: meta[k] for k in COPIED_META if k in meta})


@dataclass(frozen=True)
class Copied:
    """A copy of the store's file beside --out, to become a full snapshot."""

    tmp: Path
    taken_ms: int
    reason: str  # why not incremental ('' when --full was asked for)


def copy_if_full(out: Path, full: bool, store_id: str, positions: dict[PositionKey, int],
                 copy: Callable[[Path], Path | None]) -> Copied | None:
    """The store's file copied beside out if the snapshot is to be full (asked for, or no
    previous snapshot of this store at out); None for an incremental one, or when the
    file cannot be copied consistently (then rows are read instead)."""
    reason = "" if full else previous_problem(out, store_id, positions)
    if not full and not reason:
        return None
    taken_ms = int(time.time() * 1000)
    tmp = copy(out)
    return None if tmp is None else Copied(tmp, taken_ms, reason)


def finish_copy(copied: Copied, out: Path, source_url: str,
                threads: int | None = None) -> SnapshotResult:
    result = snapshot_from_copy(copied.tmp, out, copied.taken_ms, source_url, threads)
    result.fallback = copied.reason
    return result
