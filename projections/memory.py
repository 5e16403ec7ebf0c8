"""In-memory adapters of the projector's ports: a projector's whole logic without a broker.

They read and write an `InMemoryJournal`, the processor's InMemoryBroker (so a processor
on the in-memory adapters can write what a projector reads) plus what a projector can
tell of a real log: a log start that retention moved (`delete_before`) and a cluster id.
They behave as the Kafka adapters do where the projector can tell (the contract suite
holds both to the same tests); the group's decisions are asked for by name
(`group_assigns`, `group_revokes`, `group_loses`) and delivered by the next `consume`
(before it fetches), or by the first once `after` records were handed out.

    journal = InMemoryJournal(partitions=3)
    projector = build_projector(settings, store, memory=journal)  # ledger.wiring
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from confluent_kafka import KafkaError

from ledger.errors import InfrastructureError
from ledger.processor.memory import Headers, InMemoryBroker, InMemoryRecord
from ledger.settings import Settings
from projections.deadletter import headers_for
from projections.ingest import BadRecord
from projections.ports import ConsumedRecord, Rebalance, Watermarks
from projections.store import JournalIdentity, PositionKey


class InMemoryJournal(InMemoryBroker):
    """An InMemoryBroker with log start offsets (moved by retention) and a cluster id."""

    def __init__(self, partitions: int = 3, cluster_id: str = "in-memory") -> None:
        super().__init__(partitions)
        self.cluster_id = cluster_id
        self.starts: dict[PositionKey, int] = {}

    def delete_before(self, topic: str, partition: int, offset: int) -> None:
        """Retention: the partition's records before `offset` are gone."""
        with self.lock:
            self.starts[(topic, partition)] = offset

    def log_start(self, key: PositionKey) -> int:
        return self.starts.get(key, 0)


class InMemoryConsumedRecord(InMemoryRecord):
    """A consumed record, or a consumer's error event (as confluent-kafka's Message)."""

    __slots__ = ("_error",)

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None, headers: Headers = None,
                 error: KafkaError | None = None) -> None:
        super().__init__(topic, partition, offset, key, value, headers)
        self._error = error

    @classmethod
    def of(cls, r: InMemoryRecord) -> InMemoryConsumedRecord:
        return cls(r.topic() or "", r.partition() or 0, r.offset() or 0, r.key(), r.value(),
                   r.headers())

    def error(self) -> KafkaError | None:
        return self._error


class InMemoryJournalSource:
    """The journal's topics in an InMemoryJournal, read by a member of a one-member group
    (every partition on subscribe) unless a test says otherwise."""

    def __init__(self, journal: InMemoryJournal, settings: Settings) -> None:
        self.broker, self.settings = journal, settings
        self.reading: dict[PositionKey, int] = {}  # assigned partitions -> next offset
        self._callbacks: tuple[Rebalance, Rebalance, Rebalance] | None = None
        self._events: list[tuple[int, list[PositionKey], int]] = []  # (callback, keys, after)
        self.handed_out = 0  # records consumed so far
        # What the group decided, as delivered: (assign|revoke|lose, the positions read of
        # those partitions then; for an assignment, where the projector assigned them).
        self.delivered: list[tuple[str, dict[PositionKey, int]]] = []

    # --- what a test asks of the group (delivered by the next consume) -----------------

    def group_assigns(self, keys: list[PositionKey], after: int = 0) -> None:
        self._events.append((0, keys, after))

    def group_revokes(self, keys: list[PositionKey], after: int = 0) -> None:
        """Handed back in order: `on_revoke` (the pending batch may commit)."""
        self._events.append((1, keys, after))

    def group_loses(self, keys: list[PositionKey], after: int = 0) -> None:
        """Taken away (a session that expired): `on_lost`."""
        self._events.append((2, keys, after))

    # --- the port ----------------------------------------------------------------------

    def journal(self) -> JournalIdentity:
        return JournalIdentity(self.settings.topic_prefix, self.broker.cluster_id)

    def watermarks(self, topics: Iterable[str]) -> Watermarks:
        with self.broker.lock:
            return {(t, p): (self.broker.log_start((t, p)), len(self.broker.log(t, p)))
                    for t in topics for p in range(self.broker.partitions)}

    def subscribe(self, topics: Sequence[str], on_assign: Rebalance, on_revoke: Rebalance,
                  on_lost: Rebalance) -> None:
        self._callbacks = on_assign, on_revoke, on_lost
        self.group_assigns([(t, p) for t in topics for p in range(self.broker.partitions)])

    def assign(self, positions: dict[PositionKey, int]) -> None:
        self.reading = dict(positions)

    def consume(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        self._deliver()
        out: list[ConsumedRecord] = []
        with self.broker.lock:
            for key, position in self.reading.items():
                if position < self.broker.log_start(key):  # auto.offset.reset=error
                    out.append(InMemoryConsumedRecord(*key, position, None, None, error=KafkaError(
                        KafkaError._AUTO_OFFSET_RESET, "offset out of range")))
                    continue
                taken = self.broker.log(*key)[position:position + max_records - len(out)]
                out.extend(InMemoryConsumedRecord.of(r) for r in taken)
                self.reading[key] = position + len(taken)
        self.handed_out += len(out)
        if not out and timeout_s > 0:
            time.sleep(min(timeout_s, 0.005))
        return out

    def _deliver(self) -> None:
        while self._callbacks is not None:
            due = next((e for e in self._events if e[2] <= self.handed_out), None)
            if due is None:
                return
            self._events.remove(due)
            which, keys, _after = due
            if which == 0:
                self._callbacks[0](keys)
                self.delivered.append(("assign", self.positions(keys)))
                continue
            read = self.positions(keys)
            self.delivered.append(("revoke" if which == 1 else "lose", read))
            self._callbacks[which](list(read))
            for key in read:
                del self.reading[key]

    def positions(self, keys: Iterable[PositionKey]) -> dict[PositionKey, int]:
        return {k: self.reading[k] for k in keys if k in self.reading}

    def seek(self, positions: dict[PositionKey, int]) -> None:
        self.reading.update({k: o for k, o in positions.items() if k in self.reading})

    def cached_ends(self, keys: Iterable[PositionKey]) -> dict[PositionKey, int]:
        return {k: len(self.broker.log(*k)) for k in keys}

    def close(self) -> None:
        self.reading.clear()


class InMemoryDeadLetterSink:
    """Dead letters appended to an InMemoryJournal's dead-letter topic; failures on request."""

    def __init__(self, journal: InMemoryBroker, settings: Settings) -> None:
        self.broker, self.topic = journal, settings.topic("deadletter")
        self.sent = 0
        self._failures: list[str] = []

    def fail_next_send(self, reason: str) -> None:
        """The next send raises InfrastructureError (no record acknowledged)."""
        self._failures.append(reason)

    def send(self, bad: Sequence[BadRecord]) -> None:
        if not bad:
            return
        if self._failures:
            raise InfrastructureError(f"cannot dead-letter {len(bad)} records to {self.topic}: "
                                      f"{self._failures.pop(0)}")
        for b in bad:
            headers = [(k, v.encode() if isinstance(v, str) else v or b"")
                       for k, v in headers_for(b)]
            self.broker.produce(self.topic, b.value, b.key, headers=headers)
        self.sent += len(bad)

    def close(self) -> None:
        pass

