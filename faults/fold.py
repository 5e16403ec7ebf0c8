"""An independent fold of the journal: plain consumer, fastavro, no ledger or projection code.

What the ledger's own code computes is checked against this, so a bug shared by the
processor and the projector cannot hide.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition
from fastavro import parse_schema, schemaless_reader

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "event.v1.avsc"


@dataclass
class Fold:
    balances: Counter[str] = field(default_factory=Counter)
    events_by_command: Counter[str] = field(default_factory=Counter)
    event_ids: Counter[str] = field(default_factory=Counter)
    postings: int = 0
    events: int = 0
    unbalanced: list[str] = field(default_factory=list)


def fold_journal(bootstrap: str, topic: str, extra: dict[str, str] | None = None) -> Fold:
    schema = parse_schema(json.loads(SCHEMA.read_text()), named_schemas={})
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "independent-fold",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **(extra or {}),
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    pending, fold = set(parts), Fold()
    try:
        while pending:
            for msg in consumer.consume(5000, timeout=1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                    continue
                _add(fold, schemaless_reader(BytesIO((msg.value() or b"")[10:]), schema, None))
    finally:
        consumer.close()
    return fold


def _add(fold: Fold, event: object) -> None:
    assert isinstance(event, dict)
    fold.events += 1
    fold.event_ids[event["event_id"]] += 1
    fold.events_by_command[event["command_id"]] += 1
    total = 0
    for posting in event["postings"]:
        fold.balances[posting["account"]] += posting["amount"]
        fold.postings += 1
        total += posting["amount"]
    if total != 0:
        fold.unbalanced.append(event["event_id"])
