"""An independent fold of the journal: plain consumer, fastavro, no ledger or projection code.

What the ledger's own code computes is checked against this, so a bug shared by the
processor and the projector cannot hide. From the ledger it takes two facts of the wire
format (where the schema files are, how long the single-object header is), no decoder.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from fastavro import parse_schema, schemaless_reader

from ledger.wire import HEADER_LEN, SCHEMA_DIR

SCHEMA = SCHEMA_DIR / "event.v1.avsc"
BALANCE_SCHEMA = SCHEMA_DIR / "balance.v1.avsc"


@dataclass
class Fold:
    balances: Counter[str] = field(default_factory=Counter)
    events_by_command: Counter[str] = field(default_factory=Counter)
    event_ids: Counter[str] = field(default_factory=Counter)
    postings: int = 0
    events: int = 0
    unbalanced: list[str] = field(default_factory=list)


def fold_journal(bootstrap: str, topic: str, extra: dict[str, str] | None = None) -> Fold:
    fold = Fold()
    for _, _, _, event in read_records(bootstrap, topic, SCHEMA, extra):
        _add(fold, event)
    return fold


def read_records(
    bootstrap: str, topic: str, schema_file: Path, extra: dict[str, str] | None = None
) -> Iterator[tuple[int, int, str, dict[str, Any]]]:
    """(partition, offset, key, record) of every committed record of a topic, from offset 0
    to its end, each partition in log order; decoded with fastavro alone (no ledger code)."""
    schema = parse_schema(json.loads(schema_file.read_text()), named_schemas={})
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "independent-fold",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            **(extra or {}),
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    # Ends measured first (read_committed: the stable ends), reached by position: an
    # end-of-partition event can come early from a new leader after a failover.
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                              cached=False)[1] for p in parts}
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    pending = {p for p in parts if ends[p] > 0}
    try:
        while pending:
            for msg in consumer.consume(5000, timeout=1.0):
                if msg.error() is not None:
                    continue
                # Single-object encoding: the header (C3 01, the schema fingerprint), then Avro.
                record = schemaless_reader(BytesIO((msg.value() or b"")[HEADER_LEN:]), schema,
                                           None)
                assert isinstance(record, dict)
                yield (msg.partition() or 0, msg.offset() or 0,
                       (msg.key() or b"").decode("utf-8", "replace"), record)
            for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
    finally:
        consumer.close()


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
