"""Every record type through the real broker in a transaction, read back read_committed."""

from __future__ import annotations

import uuid

import pytest

from ledger.kafka import make_consumer, make_producer
from ledger.settings import Settings
from ledger.wire import Codec
from tests.unit.samples import SAMPLES

pytestmark = pytest.mark.integration

TOPIC_OF = {
    "command": "commands",
    "event": "events",
    "account": "accounts",
    "balance": "balances",
    "result": "results",
    "guard": "guards",
}


def test_every_record_type_round_trips_through_kafka(settings: Settings, codec: Codec) -> None:
    producer = make_producer(settings, transactional_id=f"test-{uuid.uuid4()}")
    producer.init_transactions(30)
    producer.begin_transaction()
    for name, record in SAMPLES.items():
        producer.produce(
            settings.topic(TOPIC_OF[name]), key=b"user:alice", value=codec.encode(name, record)
        )
    producer.commit_transaction(30)
    consumer = make_consumer(settings, None)
    from confluent_kafka import TopicPartition

    from ledger.kafka import partition_for

    part = partition_for(b"user:alice", settings.partitions)
    consumer.assign([TopicPartition(settings.topic(t), part, 0) for t in TOPIC_OF.values()])
    got: dict[str, dict[str, object]] = {}
    for _ in range(30):
        for msg in consumer.consume(10, timeout=1):
            assert msg.error() is None
            name, record = codec.decode(msg.value())
            got[name] = record
        if len(got) == len(SAMPLES):
            break
    consumer.close()
    assert got == {n: {**r} for n, r in SAMPLES.items()}


def test_aborted_transactions_are_invisible(settings: Settings, codec: Codec) -> None:
    producer = make_producer(settings, transactional_id=f"test-{uuid.uuid4()}")
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(
        settings.topic("events"), key=b"k", value=codec.encode("event", SAMPLES["event"])
    )
    producer.abort_transaction(30)
    producer.begin_transaction()
    committed = dict(SAMPLES["event"], command_id="kept")
    producer.produce(settings.topic("events"), key=b"k", value=codec.encode("event", committed))
    producer.commit_transaction(30)
    from confluent_kafka import TopicPartition

    from ledger.kafka import partition_for

    consumer = make_consumer(settings, None)
    consumer.assign(
        [TopicPartition(settings.topic("events"), partition_for(b"k", settings.partitions), 0)]
    )
    seen = []
    for _ in range(10):
        seen += [codec.decode_as("event", m.value())["command_id"] for m in consumer.consume(10, 1)]
        if seen:
            break
    consumer.close()
    assert seen == ["kept"]
