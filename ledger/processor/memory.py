"""In-memory adapters of the processor's ports: a whole processor without a broker.

`InMemoryBroker` holds topics of committed records and the groups' committed offsets;
the adapters over it behave as the Kafka ones do where the processor can tell (the
contract suite holds both to the same tests): a transaction's records and consumed
offsets appear together at commit or not at all, assignment and revocation are reported
from inside `consume` after the batch was fetched (as librdkafka may), and offsets count
up from 0 in every partition. Faults are asked for by name (`fail_commit`, `fail_writes`,
`fail_next_consume`), so the processor's recovery can be shown in milliseconds.

    broker = InMemoryBroker(partitions=3)
    processor = build_processor(settings, "p0", memory=broker)  # ledger.wiring
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ledger.domain import JournalEntry
from ledger.errors import CodecError, InfrastructureError
from ledger.kafka import partition_for
from ledger.processor.lookup import checked_event
from ledger.processor.ports import (
    BEGINNING,
    CHANGELOGS,
    Failure,
    NotReadableYet,
    Record,
    SinkFailed,
    SourceFatal,
)
from ledger.records import ReverseRef
from ledger.settings import Settings
from ledger.wire import Codec

Headers = list[tuple[str, bytes]] | None


class InMemoryRecord:
    """A committed record: the accessors of confluent-kafka's Message."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_topic", "_value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None, headers: Headers = None) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._headers = key, value, headers

    def topic(self) -> str | None:
        return self._topic

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int | None:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> Headers:
        return self._headers


class InMemoryBroker:
    """Topics (created on first use, `partitions` each) and committed group offsets."""

    def __init__(self, partitions: int = 3) -> None:
        self.partitions = partitions
        self.topics: dict[str, list[list[InMemoryRecord]]] = {}
        self.offsets: dict[tuple[str, str], dict[int, int]] = {}  # (group, topic) -> offsets
        self.lock = threading.Lock()

    def log(self, topic: str, partition: int) -> list[InMemoryRecord]:
        parts = self.topics.get(topic)
        if parts is None:
            parts = self.topics[topic] = [[] for _ in range(self.partitions)]
        return parts[partition]

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                partition: int = -1, *, headers: Headers = None) -> InMemoryRecord:
        """Append one record, committed at once (a non-transactional producer's write)."""
        with self.lock:
            return self._append(topic, value, key, partition, headers)

    def _append(self, topic: str, value: bytes | None, key: bytes | None, partition: int,
                headers: Headers) -> InMemoryRecord:
        if partition < 0:
            partition = partition_for(key or b"", self.partitions)
        log = self.log(topic, partition)
        record = InMemoryRecord(topic, partition, len(log), key, value, headers)
        log.append(record)
        return record

    def commit(self, writes: list[tuple[str, bytes | None, bytes | None, int, Headers]],
               group: str, topic: str, offsets: dict[int, int]) -> None:
        """A transaction's records and consumed offsets, visible together."""
        with self.lock:
            for write in writes:
                self._append(*write)
            self.offsets.setdefault((group, topic), {}).update(offsets)

    def committed(self, group: str, topic: str) -> dict[int, int]:
        return dict(self.offsets.get((group, topic), {}))


class InMemoryCommandSource:
    """A group member on the commands topic; it is assigned every partition on subscribe
    unless told otherwise (`assign`, `revoke`: delivered by the next `consume`)."""

    def __init__(self, broker: InMemoryBroker, settings: Settings, group: str = "") -> None:
        self.broker, self.topic = broker, settings.topic("commands")
        self.group_id = group or f"{settings.topic_prefix}.processor"
        self.positions: dict[int, int] = {}  # assigned partitions -> next offset
        self._callbacks: tuple[Callable[[list[int]], None], Callable[[list[int]], None]] | None
        self._callbacks = None
        self._events: list[tuple[str, list[int]]] = []
        self._fatal: str | None = None

    # --- what a test (or a demonstration) asks of the group --------------------------

    def assign(self, partitions: list[int]) -> None:
        self._events.append(("assign", partitions))

    def revoke(self, partitions: list[int]) -> None:
        self._events.append(("revoke", partitions))

    @property
    def rebalancing(self) -> bool:
        """An assignment or revocation waits for the next consume."""
        return bool(self._events)

    def fail_next_consume(self, reason: str) -> None:
        """The member dies: the next consume raises SourceFatal."""
        self._fatal = reason

    # --- the port --------------------------------------------------------------------

    def open(self) -> int:
        return self.broker.partitions

    def subscribe(self, on_assign: Callable[[list[int]], None],
                  on_revoke: Callable[[list[int]], None]) -> None:
        self._callbacks = on_assign, on_revoke
        self.assign(list(range(self.broker.partitions)))

    def consume(self, max_records: int, timeout_s: float) -> list[Record]:
        if self._fatal is not None:
            reason, self._fatal = self._fatal, None
            raise SourceFatal(reason)
        out: list[Record] = []
        with self.broker.lock:
            for partition, position in self.positions.items():
                log = self.broker.log(self.topic, partition)
                taken = log[position:position + max_records - len(out)]
                out.extend(taken)
                self.positions[partition] = position + len(taken)
        self._deliver()  # after the fetch: a batch may predate its partitions' new owners
        if not out and timeout_s > 0 and not self._events:
            time.sleep(min(timeout_s, 0.005))
        return out

    def _deliver(self) -> None:
        assert self._callbacks is not None
        on_assign, on_revoke = self._callbacks
        while self._events:
            kind, partitions = self._events.pop(0)
            if kind == "assign":
                fresh = [p for p in partitions if p not in self.positions]
                on_assign(fresh)
                start = self.committed(fresh)
                self.seek(start)
            else:
                gone = [p for p in partitions if p in self.positions]
                on_revoke(gone)
                for p in gone:
                    del self.positions[p]

    def seek(self, positions: dict[int, int]) -> None:
        for partition, offset in positions.items():
            self.positions[partition] = 0 if offset == BEGINNING else offset

    def committed(self, partitions: list[int]) -> dict[int, int]:
        found = self.broker.committed(self.group_id, self.topic)
        return {p: found.get(p, BEGINNING) for p in partitions}

    def lag(self, partitions: list[int]) -> dict[int, int]:
        return {p: len(self.broker.log(self.topic, p)) - self.positions[p]
                for p in partitions if p in self.positions}

    def group(self) -> Any:
        return self.group_id

    def reopen(self) -> None:
        assert self._callbacks is not None
        self.positions.clear()
        self.subscribe(*self._callbacks)

    def close(self) -> None:
        self.positions.clear()


class InMemoryTransaction:
    """The records of one open transaction (a RecordWriter)."""

    def __init__(self, sink: InMemoryTransactionalSink) -> None:
        self.sink = sink
        self.writes: list[tuple[str, bytes | None, bytes | None, int, Headers]] = []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                partition: int = -1, *, headers: Headers = None) -> None:
        failing = self.sink.failing_writes
        if failing is not None:
            error = failing(topic, value)
            if error is not None:
                raise error
        self.writes.append((topic, value, key, partition, headers))


class InMemoryTransactionalSink:
    """Transactions committed into an InMemoryBroker; faults on request."""

    def __init__(self, broker: InMemoryBroker, settings: Settings) -> None:
        self.broker, self.topic = broker, settings.topic("commands")
        self.open: InMemoryTransaction | None = None
        self.commits = self.aborts = self.replaced = 0
        self.failing_writes: Callable[[str, bytes | None], Exception | None] | None = None
        self._faults: list[tuple[Failure, bool]] = []

    def fail_commit(self, kind: Failure, landed: bool = False) -> None:
        """The next commit fails with `kind`; `landed`: after its records and offsets were
        committed (a commit whose retries never answer: its outcome is unknown)."""
        self._faults.append((kind, landed))

    def fail_writes(self, error: Callable[[str, bytes | None], Exception | None]) -> None:
        """Writes for which `error(topic, value)` gives an exception raise it."""
        self.failing_writes = error

    def start(self) -> None:
        self.open = None

    def begin(self) -> InMemoryTransaction:
        assert self.open is None, "a transaction is already open"
        self.open = InMemoryTransaction(self)
        return self.open

    def commit(self, offsets: dict[int, int], group: Any) -> None:
        txn = self.open
        assert txn is not None, "no open transaction"
        if self._faults:
            kind, landed = self._faults.pop(0)
            if landed:
                self._land(txn, offsets, group)
            raise SinkFailed(kind, f"injected {kind.value} commit failure")
        self._land(txn, offsets, group)

    def _land(self, txn: InMemoryTransaction, offsets: dict[int, int], group: Any) -> None:
        self.broker.commit(txn.writes, str(group), self.topic, offsets)
        self.commits += 1
        self.open = None

    def abort(self) -> bool:
        self.open = None
        self.aborts += 1
        return True

    def replace(self, why: str) -> None:
        self.open = None  # a commit that landed stays; anything else is gone
        self.replaced += 1

    def failure(self, error: BaseException) -> Failure | None:
        if isinstance(error, SinkFailed):
            return error.kind
        if isinstance(error, BufferError):
            return Failure.ABORTABLE
        return None


class InMemoryChangelogReader:
    """The changelogs in an InMemoryBroker: every transaction there is over at once."""

    def __init__(self, broker: InMemoryBroker, settings: Settings, chunk: int = 5000) -> None:
        self.broker, self.settings, self.chunk = broker, settings, chunk

    def stable_ends(self, partition: int) -> dict[str, tuple[int, int]]:
        return {n: (0, len(self.broker.log(self.settings.topic(n), partition)))
                for n in CHANGELOGS}

    def ends(self, partitions: list[int]) -> dict[int, dict[str, int]]:
        return {p: {n: end for n, (_, end) in self.stable_ends(p).items()} for p in partitions}

    def read(self, changelog: str, partition: int, start: int,
             end: int) -> Iterator[tuple[list[bytes | None], int]]:
        """As Kafka's: up to `end` even if records are still to come, or fail when stalled."""
        log = self.broker.log(self.settings.topic(changelog), partition)
        deadline = time.monotonic() + self.settings.tuning.read_stall_s
        while len(log) < end:
            if time.monotonic() > deadline:
                raise InfrastructureError(f"{self.settings.topic(changelog)}[{partition}]: "
                                          f"restore stuck at offset {len(log)} of {end}")
            time.sleep(0.01)
        for first in range(start, end, self.chunk):
            chunk = log[first:min(first + self.chunk, end)]
            yield [r.value() for r in chunk], first + len(chunk)

    def close(self) -> None:
        pass


class InMemoryJournalLookup:
    """Journal events in an InMemoryBroker, by position."""

    def __init__(self, broker: InMemoryBroker, settings: Settings, codec: Codec) -> None:
        self.broker, self.codec, self.topic = broker, codec, settings.topic("events")
        self._unreadable = 0

    def unreadable(self, times: int) -> None:
        """The next `times` fetches find the journal unreadable (as mid-failover)."""
        self._unreadable = times

    def fetch(self, ref: ReverseRef) -> JournalEntry | str:
        if self._unreadable > 0:
            self._unreadable -= 1
            raise NotReadableYet(f"{self.topic}[{ref.partition}] is not readable (injected)")
        log = self.broker.log(self.topic, ref.partition)
        if ref.offset >= len(log):
            return (f"no event at {self.topic}[{ref.partition}]@{ref.offset}: "
                    f"the partition ends at {len(log)}")
        record = log[ref.offset]
        return checked_event(self.codec, ref, ref.offset, record.value())

    def close(self) -> None:
        pass


class InMemoryAccountsTable:
    """Every account opened in an InMemoryBroker's accounts topic (read as it is asked)."""

    def __init__(self, broker: InMemoryBroker, settings: Settings, codec: Codec) -> None:
        self.broker, self.codec, self.topic = broker, codec, settings.topic("accounts")
        self.accounts: dict[str, str] = {}
        self._read = [0] * broker.partitions

    def known(self, account: str) -> bool:
        if self.accounts.get(account) != "OPEN":
            self._catch_up()
        return self.accounts.get(account) == "OPEN"

    def _catch_up(self) -> None:
        for partition in range(self.broker.partitions):
            log = self.broker.log(self.topic, partition)
            for record in log[self._read[partition]:]:
                try:
                    rec = self.codec.decode_as("account", record.value())
                except CodecError:
                    continue
                self.accounts[rec["account"]] = rec["status"]
            self._read[partition] = len(log)

    def new_batch(self) -> None:
        pass  # read as it is asked: always as far as the broker goes

    def start(self) -> None:
        self._catch_up()

    def stop(self) -> None:
        pass
