"""The processor's on-disk state (SQLite, one file per instance): bounded, durable, checkpointed.

Per owned partition it keeps the outcomes of the deduplication window, the event ids
reversed and the routed-credit marks (both forever), and the balances of its accounts.
Each write is one SQLite transaction that also records the changelog offsets the state
reflects, so a restart or a reassignment reads only the changelogs' tails. The file is a
cache of the changelogs (points.balances, points.results, points.guards): deleting it
costs a longer restore, never a decision.
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from ledger.domain import AccountState, AccountType
from ledger.errors import InfrastructureError, UsageError
from ledger.processor.state import BatchChanges, CreditMark
from ledger.records import Outcome

log = logging.getLogger("ledger.processor")

SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    partition INTEGER NOT NULL, command_id TEXT NOT NULL, accepted INTEGER NOT NULL,
    reason TEXT, detail TEXT NOT NULL, event_ids TEXT NOT NULL, account TEXT NOT NULL,
    fingerprint TEXT NOT NULL, reverses TEXT, forget_at INTEGER NOT NULL,
    PRIMARY KEY (partition, command_id));
CREATE INDEX IF NOT EXISTS outcomes_forget ON outcomes (forget_at);
CREATE TABLE IF NOT EXISTS reversed (
    partition INTEGER NOT NULL, event_id TEXT NOT NULL, command_id TEXT NOT NULL,
    PRIMARY KEY (partition, event_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS credit_marks (
    partition INTEGER NOT NULL, source INTEGER NOT NULL, offset INTEGER NOT NULL,
    accounts TEXT NOT NULL, PRIMARY KEY (partition, source)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS balances (
    partition INTEGER NOT NULL, account TEXT NOT NULL, type TEXT NOT NULL,
    floor INTEGER NOT NULL, balance INTEGER NOT NULL, is_open INTEGER NOT NULL,
    PRIMARY KEY (account)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    partition INTEGER NOT NULL, topic TEXT NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (partition, topic)) WITHOUT ROWID;
"""
# Balances read most recently, kept as objects: the hot accounts of a batch.
BALANCE_CACHE_ENTRIES = 100_000
_SEP = "\x1f"  # joins event ids and credited accounts (neither can contain it)
_TYPES = {t.value: t for t in AccountType}
_OUTCOME_COLUMNS = "command_id, accepted, reason, detail, event_ids, account, fingerprint, reverses"
_IN_CHUNK = 500  # ids per IN (...) query: under SQLite's 32,766 host parameters


class StateStore:
    """One instance's state for every partition it owns or has owned (stale until restored)."""

    def __init__(self, path: Path, cache_kib: int = 32_768) -> None:
        self.path, self.cache_kib = path, cache_kib
        self._balances: dict[str, tuple[int, AccountState]] = {}
        self._lock: IO[str] | None = None

    def open(self) -> None:
        """Take the file for this process and open it (once the service is starting)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.executescript(
                # WAL without a sync per commit: a power cut may lose the last writes, and
                # their checkpoint with them, so the next start reads a longer tail.
                f"PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                f"PRAGMA cache_size=-{self.cache_kib}; PRAGMA temp_store=MEMORY; {SCHEMA}"
            )
        except sqlite3.Error as e:
            raise InfrastructureError(f"cannot open the processor state {self.path}: {e}") from e

    def close(self) -> None:
        if self._lock is not None:
            self.db.close()
            self._lock.close()
            self._lock = None

    # --- reads (the PartitionState protocol) -----------------------------------

    def balance(self, partition: int, account: str) -> AccountState | None:
        cached = self._balances.get(account)
        if cached is not None:
            return cached[1] if cached[0] == partition else None
        row = self.db.execute(
            "SELECT partition, type, floor, balance, is_open FROM balances WHERE account = ?",
            (account,),
        ).fetchone()
        if row is None or row[0] != partition:
            return None
        state = AccountState(account, _TYPES[row[1]], row[2], row[3], bool(row[4]))
        self._cache(partition, state)
        return state

    def outcome(self, partition: int, command_id: str) -> Outcome | None:
        row = self.db.execute(
            f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE partition = ? AND command_id = ?",
            (partition, command_id),
        ).fetchone()
        return None if row is None else _outcome(row)

    def outcomes(self, partition: int, command_ids: Iterable[str]) -> dict[str, Outcome]:
        """The outcomes known for some ids (a batch's), in a few queries instead of one each:
        most ids of a batch are new, and one query per id cost more than its decision."""
        found: dict[str, Outcome] = {}
        ids = sorted(set(command_ids))  # in key order: neighbouring pages, read once
        try:
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                rows = self.db.execute(
                    f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE partition = ? "
                    f"AND command_id IN ({','.join('?' * len(chunk))})",
                    (partition, *chunk),
                )
                for row in rows:
                    found[row[0]] = _outcome(row)
        except sqlite3.Error as e:
            raise InfrastructureError(f"processor state {self.path}: {e}") from e
        return found

    def is_reversed(self, partition: int, event_id: str) -> bool:
        return (
            self.db.execute(
                "SELECT 1 FROM reversed WHERE partition = ? AND event_id = ?", (partition, event_id)
            ).fetchone()
            is not None
        )

    def credit_mark(self, partition: int, source: int) -> CreditMark | None:
        row = self.db.execute(
            "SELECT offset, accounts FROM credit_marks WHERE partition = ? AND source = ?",
            (partition, source),
        ).fetchone()
        return None if row is None else CreditMark(row[0], frozenset(row[1].split(_SEP)))

    def checkpoints(self, partition: int) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT topic, next_offset FROM checkpoints WHERE partition = ?", (partition,)
        )
        return dict(rows.fetchall())

    def outcome_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outcomes").fetchone()[0])

    # --- writes ------------------------------------------------------------------

    def commit(self, changes: BatchChanges, forget_at: dict[tuple[int, str], int]) -> None:
        """Take in a committed batch (`forget_at`: when each outcome may be forgotten)."""
        with self._transaction():
            self._put_balances(changes.balances.values())
            self._put_outcomes(
                (p, o, forget_at[(p, o.command_id)]) for (p, _), (o, _) in changes.outcomes.items()
            )
            self._put_reversed((p, e, c) for (p, e), c in changes.reversed.items())
            self._put_marks((p, s, m) for (p, s), m in changes.marks.items())

    def restore(
        self,
        partition: int,
        topic: str,
        next_offset: int,
        balances: Iterable[AccountState] = (),
        outcomes: Iterable[tuple[Outcome, int]] = (),
        reversed_ids: Iterable[tuple[str, str]] = (),
        marks: Iterable[tuple[int, CreditMark]] = (),
    ) -> None:
        """Take in a chunk of one changelog partition, with the offset after it."""
        with self._transaction():
            self._put_balances((partition, s) for s in balances)
            self._put_outcomes((partition, o, f) for o, f in outcomes)
            self._put_reversed((partition, e, c) for e, c in reversed_ids)
            self._put_marks((partition, s, m) for s, m in marks)
            self._checkpoint(partition, {topic: next_offset})

    def checkpoint(self, partition: int, offsets: dict[str, int]) -> None:
        with self._transaction():
            self._checkpoint(partition, offsets)

    def prune(self, now_ms: int, limit: int = 5000) -> int:
        """Forget at most `limit` outcomes whose deduplication window has passed."""
        with self._transaction():
            cursor = self.db.execute(
                "DELETE FROM outcomes WHERE rowid IN "
                "(SELECT rowid FROM outcomes WHERE forget_at < ? LIMIT ?)",
                (now_ms, limit),
            )
        return cursor.rowcount

    def reset(self, partition: int) -> None:
        """Drop everything known of a partition (its changelogs were recreated)."""
        with self._transaction():
            for table in ("outcomes", "reversed", "credit_marks", "balances", "checkpoints"):
                self.db.execute(f"DELETE FROM {table} WHERE partition = ?", (partition,))
        self.forget_cache(partition)

    def forget_cache(self, partition: int | None = None) -> None:
        """Drop cached balances (of one partition): another owner may have changed them."""
        if partition is None:
            self._balances.clear()
        else:
            self._balances = {a: v for a, v in self._balances.items() if v[0] != partition}

    # --- helpers -------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db, self.path)

    def _cache(self, partition: int, state: AccountState) -> None:
        if len(self._balances) >= BALANCE_CACHE_ENTRIES:
            self._balances.clear()  # bounded: the next batches warm it again
        self._balances[state.account] = (partition, state)

    def _put_balances(self, states: Iterable[tuple[int, AccountState]]) -> None:
        rows = []
        for partition, s in states:
            self._cache(partition, s)
            rows.append((partition, s.account, str(s.account_type), s.floor, s.balance, s.is_open))
        self.db.executemany("INSERT OR REPLACE INTO balances VALUES (?, ?, ?, ?, ?, ?)", rows)

    def _put_outcomes(self, outcomes: Iterable[tuple[int, Outcome, int]]) -> None:
        # The first outcome of an id stands: a retry's echo never replaces it.
        self.db.executemany(
            "INSERT OR IGNORE INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (p, o.command_id, o.accepted, o.reason, o.detail, _SEP.join(o.event_ids),
                 o.account, o.payload_fingerprint, o.reverses_event_id, forget)
                for p, o, forget in outcomes
            ),
        )

    def _put_reversed(self, rows: Iterable[tuple[int, str, str]]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO reversed VALUES (?, ?, ?)", rows)

    def _put_marks(self, rows: Iterable[tuple[int, int, CreditMark]]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO credit_marks VALUES (?, ?, ?, ?)",
            ((p, s, m.offset, _SEP.join(sorted(m.accounts))) for p, s, m in rows),
        )

    def _checkpoint(self, partition: int, offsets: dict[str, int]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?)",
            ((partition, topic, offset) for topic, offset in offsets.items()),
        )


class _Transaction:
    """BEGIN ... COMMIT, ROLLBACK on error, sqlite errors as InfrastructureError."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db, self.path = db, path

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        if error is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error as e:
                error = e
        self.db.execute("ROLLBACK")
        if isinstance(error, sqlite3.Error):
            raise InfrastructureError(f"processor state {self.path}: {error}") from error


def _outcome(row: tuple[Any, ...]) -> Outcome:
    ids = tuple(row[4].split(_SEP)) if row[4] else ()
    return Outcome(row[0], bool(row[1]), row[2], row[3], ids, row[5], row[6], row[7])


def _lock(path: Path) -> IO[str]:
    """Hold the state file for this process: two processors on one file would corrupt it."""
    handle = path.with_suffix(".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        handle.close()
        raise UsageError(
            f"the processor state {path} is in use by another process: two instances "
            "with one --instance-id?"
        ) from e
    return handle
