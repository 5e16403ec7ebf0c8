"""A Jepsen-style history of client operations: each command invoked, then completed once.

The client logs every command as *invoked*, then completes it once: *ok* (the outcome was
accepted), *failed* (rejected, with its reason) or *unknown* (no outcome in time, or the
send failed: it may or may not have been applied). faults.checker holds that history
against what Kafka committed (faults.observed reads it).

Recording is cheap (a lock, an append, a few attribute writes) and safe from any thread:
outcomes complete in the client's watcher thread, delivery errors in the producer's.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from ledger.domain import (
    Command,
    Earn,
    Join,
    OpenAccount,
    Reverse,
    Spend,
)
from ledger.records import Outcome

INVOKED, OK, FAILED, UNKNOWN = "invoked", "ok", "failed", "unknown"

# Kinds the history knows; "reverse" carries the reversed event id in `other`.
OPEN, EARN, SPEND, JOIN, REVERSE = "open", "earn", "spend", "join", "reverse"


@dataclass(slots=True, eq=False)
class Op:
    """One client operation: a command sent, and what became of it."""

    index: int
    kind: str
    command_id: str
    account: str  # the deciding account (the record's key)
    other: str | None  # the other account (a join's room), or a reversed event id
    amount: int  # earn/spend amount, join fee, open grant
    invoked_at: float
    floor: int = 0  # an open's floor
    status: str = INVOKED
    completed_at: float | None = None
    reason: str | None = None
    detail: str = ""
    late: str | None = None  # an outcome that came after the op was completed (diagnostics)

    @property
    def key(self) -> tuple[str, str]:
        return self.account, self.command_id

    @property
    def done_at(self) -> float:
        """When the op completed; an op never completed may still be in flight: forever."""
        return self.completed_at if self.completed_at is not None else float("inf")

    def describe(self) -> str:
        other = f" {self.other}" if self.other else ""
        return f"{self.kind} {self.account}{other} {self.amount}"


_OP_FIELDS = ("index", "kind", "command_id", "account", "other", "amount", "invoked_at",
              "floor", "status", "completed_at", "reason", "detail", "late")


class History:
    """The log of operations, appended from any thread. Each op completes once; an outcome
    arriving after that (an ok after the op timed out as unknown) is kept in `op.late`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.ops: list[Op] = []
        self.by_key: dict[tuple[str, str], list[Op]] = {}
        self.in_flight = 0  # ops invoked and not completed yet
        # Called with each op as it completes (in the completing thread, outside the lock).
        self.listeners: list[Callable[[Op], None]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(list(self.ops))

    # --- invoking ----------------------------------------------------------------------

    def invoke(self, command: Command, at: float | None = None) -> Op:
        """Log a command about to be sent (call it before the send)."""
        kind, other, amount, floor = describe_command(command)
        return self.invoke_raw(kind, command.command_id, command.deciding_account, other,
                               amount, floor=floor, at=at)

    def invoke_raw(self, kind: str, command_id: str, account: str, other: str | None,
                   amount: int, floor: int = 0, at: float | None = None) -> Op:
        with self._lock:
            op = Op(len(self.ops), kind, command_id, account, other, amount,
                    self.clock() if at is None else at, floor)
            self.ops.append(op)
            self.by_key.setdefault(op.key, []).append(op)
            self.in_flight += 1
        return op

    # --- completing --------------------------------------------------------------------

    def ok(self, op: Op, at: float | None = None) -> bool:
        return self._complete(op, OK, None, "", at)

    def fail(self, op: Op, reason: str, detail: str = "", at: float | None = None) -> bool:
        return self._complete(op, FAILED, reason, detail, at)

    def unknown(self, op: Op, why: str = "", at: float | None = None) -> bool:
        return self._complete(op, UNKNOWN, None, why, at)

    def outcome(self, op: Op, outcome: Outcome, at: float | None = None) -> bool:
        if outcome.accepted:
            return self.ok(op, at)
        return self.fail(op, outcome.reason or "", outcome.detail, at)

    def track(self, op: Op, future: Future[Outcome]) -> None:
        """Complete `op` when the client's future of its outcome completes."""

        def done(f: Future[Outcome]) -> None:
            error = f.exception()
            if error is not None:
                self.unknown(op, f"{type(error).__name__}: {error}")
            else:
                self.outcome(op, f.result())

        future.add_done_callback(done)

    def expire(self, why: str = "no outcome in time") -> int:
        """Every op still in flight becomes unknown; how many did."""
        return sum(self.unknown(op, why) for op in self.pending())

    def _complete(self, op: Op, status: str, reason: str | None, detail: str,
                  at: float | None) -> bool:
        now = self.clock() if at is None else at
        with self._lock:
            if op.status != INVOKED:
                if op.late is None and status != UNKNOWN:
                    op.late = f"{status} {reason or ''}".strip()
                return False
            op.status, op.completed_at, op.reason, op.detail = status, now, reason, detail
            self.in_flight -= 1
        for listener in self.listeners:
            listener(op)
        return True

    # --- reading -----------------------------------------------------------------------

    def dump(self, path: Path) -> None:
        """One JSON object per op (to check the same history again later)."""
        with path.open("w") as out:
            for op in list(self.ops):
                out.write(json.dumps({f: getattr(op, f) for f in _OP_FIELDS}) + "\n")

    @classmethod
    def load(cls, path: Path) -> History:
        h = cls()
        with path.open() as lines:
            for line in lines:
                op = Op(**json.loads(line))
                h.ops.append(op)
                h.by_key.setdefault(op.key, []).append(op)
                h.in_flight += op.status == INVOKED
        return h

    def pending(self) -> list[Op]:
        with self._lock:
            return [op for op in self.ops if op.status == INVOKED]

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(op.status for op in self.ops)


def describe_command(command: Command) -> tuple[str, str | None, int, int]:
    """(kind, other account, amount, floor) of a client command."""
    match command:
        case OpenAccount():
            return OPEN, None, command.grant, command.floor
        case Earn():
            return EARN, None, command.amount, 0
        case Spend():
            return SPEND, None, command.amount, 0
        case Join():
            return JOIN, command.room, command.fee, 0
        case Reverse():
            return REVERSE, command.event_id, 0, 0
    raise ValueError(f"not a client command: {command!r}")
