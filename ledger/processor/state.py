"""What a processor instance decides with: the batch's overlay over the owned partitions' state.

Pure: no Kafka, no files. The overlay holds one batch's uncommitted changes on top of a
`PartitionState` reader (the on-disk store); the processor hands them to the store only
after the batch's Kafka transaction commits, so an abort leaves the store untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ledger.domain import AccountState
from ledger.records import Outcome


@dataclass
class ProcessorStats:
    """Counters for logs and metrics."""

    batches: int = 0
    commands: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    credits_refused: int = 0
    aborts: int = 0
    commit_retries: int = 0
    resyncs: int = 0
    rejoins: int = 0
    producer_restarts: int = 0
    dropped_unowned: int = 0
    last_batch_ms: float = 0.0


@dataclass(frozen=True)
class CreditMark:
    """The last routed credit applied from one source partition: its command's offset and
    the accounts credited for it so far. One source partition's owner routes credits in
    offset order, so every credit at or below the mark has been applied: forever, in a
    constant amount of state per pair of partitions."""

    offset: int
    accounts: frozenset[str] = frozenset()

    def covers(self, offset: int, account: str) -> bool:
        return offset < self.offset or (offset == self.offset and account in self.accounts)

    def including(self, offset: int, account: str) -> CreditMark:
        if offset == self.offset:
            return CreditMark(offset, self.accounts | {account})
        return CreditMark(offset, frozenset({account}))


class PartitionState(Protocol):
    """The committed state of the partitions an instance owns (the store)."""

    def balance(self, partition: int, account: str) -> AccountState | None: ...

    def outcome(self, partition: int, command_id: str) -> Outcome | None: ...

    def outcomes(self, partition: int, command_ids: Iterable[str]) -> dict[str, Outcome]: ...

    def is_reversed(self, partition: int, event_id: str) -> bool: ...

    def credit_mark(self, partition: int, source: int) -> CreditMark | None: ...


@dataclass
class BatchChanges:
    """One batch's changes, by partition: what the store takes in once the batch commits."""

    balances: dict[str, tuple[int, AccountState]] = field(default_factory=dict)
    outcomes: dict[tuple[int, str], tuple[Outcome, int]] = field(default_factory=dict)
    reversed: dict[tuple[int, str], str] = field(default_factory=dict)
    marks: dict[tuple[int, int], CreditMark] = field(default_factory=dict)
    opened: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.balances or self.outcomes or self.reversed or self.marks)


class Overlay:
    """A batch's uncommitted changes on top of the committed partition states.

    `owns(partition)` says whether the instance owns a partition at this moment;
    `known(account)` whether the global accounts table has the account open.
    """

    def __init__(
        self,
        committed: PartitionState,
        owns: Callable[[int], bool],
        known: Callable[[str], bool],
        route: Callable[[str], int],
    ) -> None:
        self.committed, self._owns, self._known, self._route = committed, owns, known, route
        self.partition = -1
        self.changes = BatchChanges()
        self.reversed_ids = _ReversedIds(self)
        # The committed outcomes of the batch's ids, read at once (None: none yet).
        self._preloaded: dict[tuple[int, str], Outcome | None] = {}

    def reset(self) -> BatchChanges:
        """Start a new batch; returns the last one's changes."""
        done, self.changes = self.changes, BatchChanges()
        self._preloaded.clear()
        return done

    def preload(self, ids: dict[int, list[str]]) -> None:
        """Read the committed outcomes of a batch's command ids (by partition) at once."""
        for partition, command_ids in ids.items():
            found = self.committed.outcomes(partition, command_ids)
            for command_id in command_ids:
                self._preloaded[(partition, command_id)] = found.get(command_id)

    def bind(self, partition: int) -> None:
        self.partition = partition

    # LedgerView
    def owned(self, account: str) -> AccountState | None:
        found = self.changes.balances.get(account)
        if found is not None:
            return found[1]
        return self.committed.balance(self.partition, account)

    def known(self, account: str) -> bool:
        # Accounts of owned partitions from this instance's own state, never the table:
        # the table's partition ends may hold this batch's own open transaction, which it
        # cannot read past until the batch commits.
        if account in self.changes.opened:
            return True
        partition = self._route(account)
        if not self._owns(partition):
            return self._known(account)
        return account in self.changes.balances or (
            self.committed.balance(partition, account) is not None
        )

    def outcome(self, command_id: str) -> Outcome | None:
        key = (self.partition, command_id)
        found = self.changes.outcomes.get(key)
        if found is not None:
            return found[0]
        if key in self._preloaded:
            return self._preloaded[key]
        return self.committed.outcome(self.partition, command_id)

    def is_reversed(self, event_id: str) -> bool:
        if (self.partition, event_id) in self.changes.reversed:
            return True
        return self.committed.is_reversed(self.partition, event_id)

    def credit_applied(self, source: int, offset: int, account: str) -> bool:
        mark = self._mark(source)
        return mark is not None and mark.covers(offset, account)

    # changes
    def put(self, state: AccountState) -> None:
        self.changes.balances[state.account] = (self.partition, state)

    def opened(self, account: str) -> None:
        self.changes.opened.add(account)

    def record(self, outcome: Outcome, decided_ms: int) -> None:
        self.changes.outcomes[(self.partition, outcome.command_id)] = (outcome, decided_ms)
        if outcome.accepted and outcome.reverses_event_id:
            self.changes.reversed[(self.partition, outcome.reverses_event_id)] = (
                outcome.command_id
            )

    def mark_credit(self, source: int, offset: int, account: str) -> None:
        mark = self._mark(source)
        new = mark.including(offset, account) if mark else CreditMark(offset, frozenset({account}))
        self.changes.marks[(self.partition, source)] = new

    def _mark(self, source: int) -> CreditMark | None:
        found = self.changes.marks.get((self.partition, source))
        return found if found is not None else self.committed.credit_mark(self.partition, source)


class _ReversedIds:
    """The event ids reversed so far (committed or in the batch), for decide()."""

    def __init__(self, overlay: Overlay) -> None:
        self._overlay = overlay

    def __contains__(self, event_id: object) -> bool:
        return isinstance(event_id, str) and self._overlay.is_reversed(event_id)
