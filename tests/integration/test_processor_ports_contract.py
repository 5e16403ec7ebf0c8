"""One contract for the processor's ports: the Kafka adapters (on the real broker) and the
in-memory ones pass the same tests, so what the in-memory unit tests of the processor
show holds on Kafka too."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from ledger.errors import InfrastructureError
from ledger.kafka import make_producer, partition_for
from ledger.processor.kafka import KafkaAccountsTable
from ledger.processor.memory import InMemoryBroker, InMemoryChangelogReader
from ledger.processor.ports import (
    BEGINNING,
    CHANGELOGS,
    Failure,
    NotReadableYet,
    ProcessorPorts,
    Record,
    SinkFailed,
)
from ledger.processor.service import ProcessorTuning
from ledger.processor.state import ProcessorStats
from ledger.records import ReverseRef
from ledger.settings import Settings
from ledger.wire import Codec
from ledger.wiring import ProcessorClients, kafka_ports, memory_ports
from tests.unit.samples import SAMPLES

pytestmark = pytest.mark.integration
CODEC = Codec()
WAIT_S = 30.0


@dataclass
class Kit:
    """A set of ports and a plain producer of input records on the same topics."""

    settings: Settings
    ports: ProcessorPorts
    put: Callable[[str, bytes, bytes, int], None]
    assigned: list[int] = field(default_factory=list)
    revoked: list[int] = field(default_factory=list)

    def subscribe(self) -> None:
        self.ports.source.subscribe(self.assigned.extend, self.revoked.extend)

    def consume(self, want: int) -> list[Record]:
        """Consume until `want` records came (and the assignment with them)."""
        got: list[Record] = []
        deadline = time.monotonic() + WAIT_S
        while len(got) < want or not self.assigned:
            assert time.monotonic() < deadline, f"{len(got)} of {want} records consumed"
            got.extend(self.ports.source.consume(100, 0.2))
        return got


@pytest.fixture(params=["kafka", "memory"])
def kit(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Kit]:
    if request.param == "memory":
        broker = InMemoryBroker(settings.partitions)

        def put_memory(topic: str, value: bytes, key: bytes, partition: int) -> None:
            broker.produce(settings.topic(topic), value, key, partition)

        yield Kit(settings, memory_ports(broker, settings), put_memory)
        return
    producer = make_producer(settings)

    def put_kafka(topic: str, value: bytes, key: bytes, partition: int) -> None:
        producer.produce(settings.topic(topic), value, key, partition)
        producer.flush(10)

    ports = kafka_ports(settings, "contract", ProcessorStats(),
                        ProcessorTuning(txn_timeout_s=10), ProcessorClients())
    yield Kit(settings, ports, put_kafka)
    ports.source.close()
    ports.journal.close()
    ports.changelogs.close()


def command(command_id: str) -> bytes:
    return CODEC.encode("command", {**SAMPLES["command"], "command_id": command_id})


def test_the_source_hands_out_records_in_order_and_reports_its_assignment(kit: Kit) -> None:
    assert kit.ports.source.open() == kit.settings.partitions
    for n in range(4):
        kit.put("commands", command(f"c{n}"), b"user:a", 1)
    kit.subscribe()
    records = kit.consume(4)
    assert sorted(kit.assigned) == list(range(kit.settings.partitions))
    assert [CODEC.decode_as("command", r.value())["command_id"] for r in records] == [
        "c0", "c1", "c2", "c3"]
    assert {(r.topic(), r.partition(), r.key()) for r in records} == {
        (kit.settings.topic("commands"), 1, b"user:a")}
    offsets = [r.offset() or 0 for r in records]
    assert offsets == sorted(offsets) and len(set(offsets)) == 4
    assert kit.ports.source.lag([1]) in ({1: 0}, {})  # Kafka's cached ends may lag
    assert kit.ports.source.committed([0, 1]) == {0: BEGINNING, 1: BEGINNING}


def test_seek_consumes_a_partition_again(kit: Kit) -> None:
    for n in range(3):
        kit.put("commands", command(f"c{n}"), b"user:a", 2)
    kit.subscribe()
    first = kit.consume(3)
    kit.ports.source.seek({2: first[1].offset() or 0})
    again = kit.consume(2)
    assert [r.value() for r in again] == [r.value() for r in first[1:]]


def test_a_committed_transaction_holds_its_records_and_offsets_together(kit: Kit) -> None:
    kit.put("commands", command("c0"), b"user:a", 0)
    kit.subscribe()
    records = kit.consume(1)
    sink, source = kit.ports.sink, kit.ports.source
    sink.start()
    writer = sink.begin()
    writer.produce(kit.settings.topic("results"), b"aborted", b"user:a", 0)
    assert sink.abort()
    writer = sink.begin()
    writer.produce(kit.settings.topic("results"), b"kept-1", b"user:a", 0)
    writer.produce(kit.settings.topic("results"), b"kept-2", b"user:a", 0,
                   headers=[("h", b"v")])
    sink.commit({0: (records[0].offset() or 0) + 1}, source.group())
    assert source.committed([0]) == {0: (records[0].offset() or 0) + 1}
    reader = kit.ports.changelogs
    low, end = reader.stable_ends(0)["results"]
    values = [v for chunk, _ in reader.read("results", 0, low, end) for v in chunk]
    assert values == [b"kept-1", b"kept-2"]
    assert reader.ends([0])[0]["results"] == end


def test_sink_failures_are_classified(kit: Kit) -> None:
    sink = kit.ports.sink
    assert sink.failure(RuntimeError("a bug")) is None
    assert sink.failure(BufferError("queue full")) is Failure.ABORTABLE
    for kind in Failure:
        assert sink.failure(SinkFailed(kind, "said")) is kind


def test_the_changelog_reader_reads_a_tail_in_order(kit: Kit) -> None:
    for n in range(7):
        kit.put("balances", f"b{n}".encode(), b"user:a", 1)
    reader = kit.ports.changelogs
    ends = reader.stable_ends(1)
    assert set(ends) == set(CHANGELOGS) and ends["results"] == (0, 0)
    low, end = ends["balances"]
    chunks = list(reader.read("balances", 1, low, end))
    assert [v for chunk, _ in chunks for v in chunk] == [f"b{n}".encode() for n in range(7)]
    assert chunks[-1][1] == end
    middle = list(reader.read("balances", 1, low + 3, end))
    assert [v for chunk, _ in middle for v in chunk] == [f"b{n}".encode() for n in range(3, 7)]


def test_the_changelog_reader_reads_to_the_end_it_was_given(kit: Kit) -> None:
    """The end of the partition can come before the end asked for: a new leader's high
    watermark lags the old leader's for a moment after a broker failure. Stopping there
    made a restore checkpoint past records it never read (a coordinator-kill run lost
    accounts and room credits for good): the reader keeps reading up to `end`."""
    for n in range(3):
        kit.put("balances", f"b{n}".encode(), b"user:a", 2)
    reader = kit.ports.changelogs
    low, end = reader.stable_ends(2)["balances"]

    def more() -> None:
        for n in range(3, 6):
            kit.put("balances", f"b{n}".encode(), b"user:a", 2)

    later = threading.Timer(1.0, more)
    later.start()
    try:
        chunks = list(reader.read("balances", 2, low, end + 3))
    finally:
        later.join()
    assert [v for chunk, _ in chunks for v in chunk] == [f"b{n}".encode() for n in range(6)]
    assert chunks[-1][1] == end + 3


def test_the_changelog_reader_fails_rather_than_stop_short(kit: Kit) -> None:
    kit.put("balances", b"only", b"user:a", 0)
    stalled = replace(kit.settings, tuning=replace(kit.settings.tuning, read_stall_s=2.0))
    reader = (kafka_ports(stalled, "stall", ProcessorStats(), ProcessorTuning(),
                          ProcessorClients()).changelogs
              if not isinstance(kit.ports.changelogs, InMemoryChangelogReader)
              else InMemoryChangelogReader(kit.ports.changelogs.broker, stalled))
    low, end = reader.stable_ends(0)["balances"]
    with pytest.raises(InfrastructureError, match="balances"):
        list(reader.read("balances", 0, low, end + 1))


def test_the_accounts_table_knows_every_account_opened_before_it_started(kit: Kit) -> None:
    names = [f"user:t{n}" for n in range(60)]
    for name in names:
        record = {**SAMPLES["account"], "account": name, "status": "OPEN"}
        kit.put("accounts", CODEC.encode("account", record), name.encode(),
                partition_for(name.encode(), kit.settings.partitions))
    table = kit.ports.accounts
    table.start()
    try:
        assert [n for n in names if not table.known(n)] == []
        assert not table.known("user:never-opened")
    finally:
        table.stop()


def test_an_accounts_table_that_cannot_load_stops_the_start(settings: Settings) -> None:
    """Started with a partial table, a processor rejected open users as unknown and
    refused credits to open rooms; it must not start at all until the table is loaded."""
    nowhere = settings.with_(bootstrap="127.0.0.1:9")
    nowhere = replace(nowhere, tuning=replace(nowhere.tuning, read_stall_s=3.0))
    table = KafkaAccountsTable(nowhere, CODEC)
    started = time.monotonic()
    with pytest.raises(InfrastructureError, match="accounts table did not load"):
        table.start()
    assert time.monotonic() - started < 15


def test_the_journal_lookup_finds_an_event_by_its_position(kit: Kit) -> None:
    event: dict[str, Any] = SAMPLES["event"]
    key = event["postings"][0]["account"].encode()
    partition = partition_for(key, kit.settings.partitions)
    kit.put("events", CODEC.encode("event", event), key, partition)
    journal = kit.ports.journal
    found = journal.fetch(ReverseRef(event["event_id"], partition, 0))
    assert not isinstance(found, str) and found.event_id == event["event_id"]
    other = journal.fetch(ReverseRef("not-this-one", partition, 0))
    assert isinstance(other, str) and "not not-this-one" in other
    past = journal.fetch(ReverseRef(event["event_id"], partition, 5))
    assert isinstance(past, str) and "the partition ends at 1" in past


@pytest.mark.parametrize("outcome", ["committed", "aborted"])
def test_an_event_in_an_open_transaction_is_retried_not_refused(
    settings: Settings, outcome: str
) -> None:
    """Kafka only: an event another producer has written but not yet committed (as around
    a failover, when the coordinator has not written its markers) cannot be read yet. The
    lookup must say so (the batch is decided again later), not refuse the reversal for good;
    once the transaction ends, the event is found, or refused at once if it was aborted."""
    event: dict[str, Any] = SAMPLES["event"]
    key = event["postings"][0]["account"].encode()
    partition = partition_for(key, settings.partitions)
    quick = replace(settings, tuning=replace(settings.tuning, lookup_wait_s=1.0))
    journal = kafka_ports(quick, "lookup", ProcessorStats(), ProcessorTuning(),
                          ProcessorClients()).journal
    writer = make_producer(settings, transactional_id=f"{settings.topic_prefix}.lookup-writer")
    try:
        writer.init_transactions(30)
        writer.begin_transaction()
        writer.produce(settings.topic("events"), CODEC.encode("event", event), key, partition)
        writer.flush(10)
        ref = ReverseRef(event["event_id"], partition, 0)
        with pytest.raises(NotReadableYet, match="not readable"):
            journal.fetch(ref)
        if outcome == "committed":
            writer.commit_transaction(30)
            found = journal.fetch(ref)
            assert not isinstance(found, str) and found.event_id == event["event_id"]
        else:
            writer.abort_transaction(30)
            started = time.monotonic()
            refused = journal.fetch(ref)
            assert isinstance(refused, str) and "no committed event" in refused
            assert time.monotonic() - started < 1.0
    finally:
        journal.close()


def test_an_account_opened_just_before_the_ask_is_known(kit: Kit) -> None:
    """A client that saw a room's open accepted, then joins it, must not be told the room
    is unknown (a final outcome) because another instance's table had not read it yet:
    a miss reads the table up to where the topic ended when the batch began."""
    table = kit.ports.accounts
    table.start()
    try:
        for n in range(5):
            name = f"room:late{n}"
            record = {**SAMPLES["account"], "account": name, "status": "OPEN"}
            kit.put("accounts", CODEC.encode("account", record), name.encode(),
                    partition_for(name.encode(), kit.settings.partitions))
            table.new_batch()
            assert table.known(name), f"{name} was opened before the ask"
        assert not table.known("room:never-opened")
    finally:
        table.stop()
