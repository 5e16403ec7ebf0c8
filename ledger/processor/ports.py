"""The ports of the command processor: what it consumes, produces and reads, as Protocols.

The processor's logic (service, group, handler, restore) speaks only to these; the
confluent-kafka adapters (`ledger.processor.kafka`: KafkaCommandSource,
KafkaTransactionalSink, KafkaChangelogReader, ...) and the in-memory ones
(`ledger.processor.memory`) implement them, and `ledger.wiring` picks one set. Both sets
pass one contract suite (tests/integration/test_processor_ports_contract.py).

The hot path stays direct: a source hands out its own record objects (confluent-kafka's
Message satisfies `Record`), and a sink's `begin()` returns the object records are
produced on (the transactional Producer itself, for Kafka): no wrapper per record.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ledger.domain import JournalEntry
from ledger.records import ReverseRef

# A seek to the first retained record of a partition (the value of Kafka's OFFSET_BEGINNING).
BEGINNING = -2
# Transactional calls take this timeout (the Kafka sink's watchdog allows some grace).
TXN_TIMEOUT_S = 30.0
# The changelogs of a commands partition, by short topic name, with their values' schemas.
CHANGELOGS = {"balances": "balance", "results": "result", "guards": "guard"}


class Record(Protocol):
    """One consumed record: confluent-kafka's Message has these methods."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def headers(self) -> Any: ...


class RecordWriter(Protocol):
    """Where a transaction's records go (confluent-kafka's Producer has this method).

    `partition` -1 means the key's partition (murmur2, as every ledger producer)."""

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                partition: int = -1, *, headers: Any = None) -> None: ...


class SourceFatal(Exception):
    """The command source cannot go on as it is: `reopen()` it (a new group member)."""


class CommandSource(Protocol):
    """The commands topic as a consumer group member: batches, positions, (re)assignment.

    Assignment and revocation are reported through the callbacks given to `subscribe`,
    from inside `consume` (as Kafka does), before the batch it returns is handed over.
    """

    topic: str

    def open(self) -> int:
        """Check the topics the processor needs; the commands topic's partition count."""
        ...

    def subscribe(self, on_assign: Callable[[list[int]], None],
                  on_revoke: Callable[[list[int]], None]) -> None: ...

    def consume(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to `max_records` records, waiting at most `timeout_s` for the first one.

        Raises SourceFatal when the member is dead (before handing out anything)."""
        ...

    def seek(self, positions: dict[int, int]) -> None:
        """Consume each partition again from an offset (or BEGINNING)."""
        ...

    def committed(self, partitions: list[int]) -> dict[int, int]:
        """The group's stable committed offsets (BEGINNING where none): waits while a
        transaction that commits offsets for them is pending."""
        ...

    def lag(self, partitions: list[int]) -> dict[int, int]:
        """Records behind the end per partition (cheap: no broker round trip)."""
        ...

    def group(self) -> Any:
        """What a sink's `commit` needs to commit consumed offsets for this group."""
        ...

    def reopen(self) -> None:
        """Replace a dead member by a new one under the same member id; assignment again."""
        ...

    def close(self) -> None: ...


class Failure(enum.Enum):
    """The documented kinds of a transactional sink's failure, and what the processor does."""

    COMMIT_UNKNOWN = "retriable-commit-unknown"  # may have committed: replace, re-synchronise
    ABORTABLE = "abortable"  # nothing committed: abort, rewind, decide the batch again
    FATAL = "fatal"  # the producer is dead: replace it, re-synchronise
    FENCED = "fenced"  # another instance took the transactional id over: stop
    RECORD = "record"  # one record cannot be written, ever: dead-letter it (else abortable)


class SinkFailed(Exception):
    """A sink's failure of a known kind (adapters may also raise their own errors and
    classify them with `TransactionalSink.failure`)."""

    def __init__(self, kind: Failure, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


class NotReadableYet(SinkFailed):
    """A log cannot be read as far as a decision needs just now (a leader moving, a
    transaction not yet settled): the batch is aborted and decided again, never refused
    for good."""

    def __init__(self, detail: str) -> None:
        super().__init__(Failure.ABORTABLE, detail)


class TransactionalSink(Protocol):
    """Transactions of records and consumed offsets: all of one commits or none of it."""

    def start(self) -> None:
        """Ready to transact (also ends whatever a previous incarnation left open)."""
        ...

    def begin(self) -> RecordWriter:
        """Begin a transaction; records produced on the result belong to it."""
        ...

    def commit(self, offsets: dict[int, int], group: Any) -> None:
        """Add the consumed commands' next offsets to the transaction and commit it.

        A retriable failure is retried; past the timeout the outcome is unknown
        (Failure.COMMIT_UNKNOWN)."""
        ...

    def abort(self) -> bool:
        """Abort the open transaction; False if that took replacing the producer (the
        transaction's outcome is then not known here: re-synchronise)."""
        ...

    def replace(self, why: str) -> None:
        """Fence the producer by a new one, which settles its open transaction."""
        ...

    def failure(self, error: BaseException) -> Failure | None:
        """The kind of a failure raised by this sink or its writer; None if it is not the
        sink's (a failure of one record's handling: a bug, or input nobody foresaw)."""
        ...


class ChangelogReader(Protocol):
    """The changelogs (CHANGELOGS) of one commands partition, as the state store reads them."""

    def stable_ends(self, partition: int) -> dict[str, tuple[int, int]]:
        """(first, end) offsets of each changelog, once no transaction is open on any."""
        ...

    def ends(self, partitions: list[int]) -> dict[int, dict[str, int]]:
        """Each changelog's end per partition, open transactions included (checkpoints)."""
        ...

    def read(self, changelog: str, partition: int, start: int,
             end: int) -> Iterator[tuple[list[bytes | None], int]]:
        """The committed values from `start` up to `end`, in chunks, each with the offset
        after its last record."""
        ...

    def close(self) -> None: ...


class JournalLookup(Protocol):
    """One committed journal event at a known position (what a reversal reverses)."""

    def fetch(self, ref: ReverseRef) -> JournalEntry | str:
        """The event, or why it cannot be used (a position past the end at once); raises
        NotReadableYet when the position cannot be read yet."""
        ...

    def close(self) -> None: ...


class AccountDirectory(Protocol):
    """Every opened account (a global table, read continuously)."""

    def new_batch(self) -> None:
        """Commands consumed from now on may name accounts opened up to now."""
        ...

    def known(self, account: str) -> bool:
        """Open, as far as every account opened before the batch began tells; raises
        NotReadableYet when the table cannot catch up in time."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class ProcessorPorts:
    """Everything outside the processor it talks to: one set per technology."""

    source: CommandSource
    sink: TransactionalSink
    changelogs: ChangelogReader
    journal: JournalLookup
    accounts: AccountDirectory
