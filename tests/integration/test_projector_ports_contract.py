"""One contract for the projector's ports, run on the Kafka adapters and the in-memory ones.

Both pass the same tests (Kafka on the real broker), so what the in-memory unit tests of
the projector show holds on Kafka too."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from ledger.errors import StoreError
from ledger.kafka import base_config, make_consumer, make_producer
from ledger.settings import Settings
from ledger.wiring import kafka_projector_ports, memory_projector_ports
from projections.factory import open_store
from projections.ingest import BadRecord
from projections.log import check_message_error, read_ranges, watermarks
from projections.memory import InMemoryJournal
from projections.ports import ConsumedRecord, ProjectorPorts
from projections.store import PositionKey, ProjectionStore

pytestmark = pytest.mark.integration
WAIT_S = 30.0


@dataclass
class Kit:
    """A set of ports, a plain producer of records on the same topics, a reader of what
    the dead-letter sink wrote, and a way to delete a partition's oldest records."""

    settings: Settings
    ports: ProjectorPorts
    put: Callable[[str, int, bytes, bytes], None]
    dead_letters: Callable[[], list[ConsumedRecord]]
    delete_before: Callable[[str, int, int], None]
    rebalances: list[tuple[str, list[PositionKey]]] = field(default_factory=list)

    def key(self, topic: str, partition: int) -> PositionKey:
        return (self.settings.topic(topic), partition)

    def consume(self, want: int) -> list[ConsumedRecord]:
        """Consume until `want` records came."""
        got: list[ConsumedRecord] = []
        deadline = time.monotonic() + WAIT_S
        while len(got) < want:
            assert time.monotonic() < deadline, f"{len(got)} of {want} records consumed"
            got.extend(self.ports.journal.consume(100, 0.2))
        return got


@pytest.fixture(params=["kafka", "memory"])
def kit(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Iterator[Kit]:
    store = open_store(f"duckdb:///{tmp_path / 'contract.duckdb'}")
    k = memory_kit(settings) if request.param == "memory" else kafka_kit(settings, store)
    yield k
    k.ports.journal.close()
    k.ports.deadletters.close()
    store.close()


def memory_kit(settings: Settings) -> Kit:
    journal = InMemoryJournal(settings.partitions)

    def put(topic: str, partition: int, key: bytes, value: bytes) -> None:
        journal.produce(settings.topic(topic), value, key, partition)

    def letters() -> list[ConsumedRecord]:
        topic = settings.topic("deadletter")
        return [r for p in range(journal.partitions) for r in journal.log(topic, p)]

    def delete(topic: str, partition: int, before: int) -> None:
        journal.delete_before(settings.topic(topic), partition, before)

    return Kit(settings, memory_projector_ports(journal, settings), put, letters, delete)


def kafka_kit(settings: Settings, store: ProjectionStore) -> Kit:
    producer = make_producer(settings)

    def put(topic: str, partition: int, key: bytes, value: bytes) -> None:
        producer.produce(settings.topic(topic), value, key, partition)
        producer.flush(10)

    def delete(topic: str, partition: int, before: int) -> None:
        admin = AdminClient(base_config(settings))
        tp = TopicPartition(settings.topic(topic), partition, before)
        for future in admin.delete_records([tp]).values():
            future.result(timeout=WAIT_S)

    return Kit(settings, kafka_projector_ports(settings, store), put,
               lambda: read_topic(settings, "deadletter"), delete)


def read_topic(settings: Settings, name: str) -> list[ConsumedRecord]:
    consumer = make_consumer(settings, None)
    try:
        ranges = watermarks(consumer, settings, [settings.topic(name)])
        return [m for batch in read_ranges(consumer, settings, ranges) for m in batch]
    finally:
        consumer.close()


def fill(kit: Kit, topic: str, partition: int, n: int) -> None:
    for i in range(n):
        kit.put(topic, partition, f"k{i}".encode(), f"v{i}".encode())


def test_the_journal_read_is_the_settings_prefix_on_a_named_cluster(kit: Kit) -> None:
    journal = kit.ports.journal.journal()
    assert journal.prefix == kit.settings.topic_prefix and journal.cluster_id


def test_watermarks_span_every_partition_from_log_start_to_end(kit: Kit) -> None:
    fill(kit, "events", 1, 5)
    fill(kit, "accounts", 0, 2)
    marks = kit.ports.journal.watermarks([kit.settings.topic("accounts"),
                                          kit.settings.topic("events")])
    expected = {kit.key(t, p): (0, 0) for t in ("accounts", "events")
                for p in range(kit.settings.partitions)}
    expected[kit.key("events", 1)] = (0, 5)
    expected[kit.key("accounts", 0)] = (0, 2)
    assert marks == expected


def test_assigned_partitions_are_read_from_their_offsets_with_their_coordinates(
        kit: Kit) -> None:
    fill(kit, "events", 0, 6)
    source, events0 = kit.ports.journal, kit.key("events", 0)
    source.assign({events0: 2, kit.key("events", 1): 0})
    got = kit.consume(4)
    assert [(m.topic(), m.partition(), m.offset(), m.error()) for m in got] == [
        (*events0, offset, None) for offset in range(2, 6)]
    assert [(m.key(), m.value()) for m in got] == [
        (f"k{i}".encode(), f"v{i}".encode()) for i in range(2, 6)]
    assert source.positions([events0])[events0] == 6
    deadline = time.monotonic() + WAIT_S
    while source.cached_ends([events0]).get(events0) != 6:
        assert time.monotonic() < deadline, "the end was never known"
        source.consume(1, 0.1)


def test_seek_reads_an_assigned_partition_again(kit: Kit) -> None:
    fill(kit, "events", 2, 4)
    source, events2 = kit.ports.journal, kit.key("events", 2)
    source.assign({events2: 0})
    assert [m.offset() for m in kit.consume(4)] == [0, 1, 2, 3]
    source.seek({events2: 1})
    assert [m.offset() for m in kit.consume(3)] == [1, 2, 3]
    assert source.positions([events2]) == {events2: 4}


def test_an_empty_assignment_reads_nothing(kit: Kit) -> None:
    fill(kit, "events", 0, 2)
    kit.ports.journal.assign({kit.key("events", 0): 0})
    kit.ports.journal.assign({})
    assert kit.ports.journal.consume(10, 0.5) == []


def test_a_subscriber_is_assigned_every_partition_of_its_topics(kit: Kit) -> None:
    fill(kit, "accounts", 1, 3)
    source = kit.ports.journal
    topics = [kit.settings.topic("accounts"), kit.settings.topic("events")]

    def assigned(keys: list[PositionKey]) -> None:
        kit.rebalances.append(("assign", keys))
        source.assign(dict.fromkeys(keys, 0))

    source.subscribe(topics, assigned, lambda keys: kit.rebalances.append(("revoke", keys)),
                     lambda keys: kit.rebalances.append(("lose", keys)))
    got = kit.consume(3)
    assert [m.offset() for m in got] == [0, 1, 2]
    assert [kind for kind, _ in kit.rebalances] == ["assign"]
    assert sorted(kit.rebalances[0][1]) == sorted(
        kit.key(t, p) for t in ("accounts", "events") for p in range(kit.settings.partitions))


def test_a_position_below_the_log_start_is_an_error_never_a_jump(kit: Kit) -> None:
    fill(kit, "events", 1, 5)
    kit.delete_before("events", 1, 3)
    events1 = kit.key("events", 1)
    assert kit.ports.journal.watermarks([events1[0]])[events1] == (3, 5)
    kit.ports.journal.assign({events1: 0})
    deadline = time.monotonic() + WAIT_S
    while True:
        got = kit.ports.journal.consume(10, 0.2)
        assert all(m.error() is not None for m in got), "records read past a deleted range"
        if got:
            break
        assert time.monotonic() < deadline, "no error for a deleted position"
    with pytest.raises(StoreError, match="records were deleted"):
        check_message_error(kit.settings, got[0])


def test_dead_letters_carry_the_original_bytes_and_their_origin(kit: Kit) -> None:
    events = kit.settings.topic("events")
    kit.ports.deadletters.send([
        BadRecord(events, 1, 17, b"user:x", b"\x00garbage", "MalformedRecordError: no"),
        BadRecord(events, 0, 3, None, None, "TruncatedRecordError: short")])
    kit.ports.deadletters.send([])
    letters = sorted(kit.dead_letters(), key=lambda m: dict(m.headers())["source_offset"])
    assert [(m.key(), m.value()) for m in letters] == [(b"user:x", b"\x00garbage"),
                                                       (None, None)]
    assert [dict(m.headers()) for m in letters] == [
        {"source_topic": events.encode(), "source_partition": b"1", "source_offset": b"17",
         "error": b"MalformedRecordError: no"},
        {"source_topic": events.encode(), "source_partition": b"0", "source_offset": b"3",
         "error": b"TruncatedRecordError: short"}]
