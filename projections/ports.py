"""The ports of the projector: the journal it reads and the dead letters it writes, as Protocols.

The projector's logic (projections.projector) speaks only to these; the confluent-kafka
adapters (`projections.kafka`: KafkaJournalSource, KafkaDeadLetterSink) and the in-memory
ones (`projections.memory`) implement them, and `ledger.wiring.build_projector` picks one
set. Both sets pass one contract suite (tests/integration/test_projector_ports_contract.py).

The store's projection_positions, not the source, is the source of truth for where to
read: the source is told where to start (`assign`, `seek`) and asked where it got to
(`positions`). The hot path stays direct: a source hands out its own record objects
(confluent-kafka's Message satisfies `ConsumedRecord`), which Ingest reads in bulk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ledger.processor.ports import Record
from projections.ingest import BadRecord
from projections.store import JournalIdentity, PositionKey

# (topic, partition) -> (log start offset, last stable offset)
Watermarks = dict[PositionKey, tuple[int, int]]
Rebalance = Callable[[list[PositionKey]], None]


class ConsumedRecord(Record, Protocol):
    """One consumed record, or an error event of the client (`error()` not None), which
    Ingest skips or raises (projections.log.check_message_error)."""

    def error(self) -> Any: ...


class JournalSource(Protocol):
    """The journal's topics (<prefix>.accounts and <prefix>.events) as a projector reads them.

    Assignment, revocation and loss are reported through the callbacks given to
    `subscribe`, from inside `consume` (as Kafka does); `on_assign` calls `assign`.
    """

    def journal(self) -> JournalIdentity:
        """The journal read: the settings' topic prefix on this cluster."""
        ...

    def watermarks(self, topics: Iterable[str]) -> Watermarks:
        """(log start, last stable offset) of every partition of the topics, asked now."""
        ...

    def subscribe(self, topics: Sequence[str], on_assign: Rebalance, on_revoke: Rebalance,
                  on_lost: Rebalance) -> None:
        """Share the topics' partitions with the other projectors of the store's group.

        `on_revoke`: handed back in order (the pending batch may commit); `on_lost`:
        taken away (another member may own them already: nothing pending may commit)."""
        ...

    def assign(self, positions: dict[PositionKey, int]) -> None:
        """Read exactly these partitions, each from its offset (nothing, if empty)."""
        ...

    def consume(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        """Up to `max_records` records, waiting at most `timeout_s`; InfrastructureError
        when the broker cannot be reached."""
        ...

    def positions(self, keys: Iterable[PositionKey]) -> dict[PositionKey, int]:
        """The next offset to read of each partition, where one is known (not past a
        hole's last+1: offsets have holes, so only the source can tell)."""
        ...

    def seek(self, positions: dict[PositionKey, int]) -> None:
        """Read assigned partitions again from these offsets."""
        ...

    def cached_ends(self, keys: Iterable[PositionKey]) -> dict[PositionKey, int]:
        """The last known end offset of each partition (no broker round trip; absent
        where none is known yet): for lag."""
        ...

    def close(self) -> None: ...


class DeadLetterSink(Protocol):
    """<prefix>.deadletter: undecodable records with their origin."""

    def send(self, bad: Sequence[BadRecord]) -> None:
        """Write durably before returning (InfrastructureError unless every record is
        acknowledged): the batch that skips them commits only after this."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ProjectorPorts:
    """Everything outside the projector (and its store) it talks to: one set per technology."""

    journal: JournalSource
    deadletters: DeadLetterSink
