"""Reading the journal: follow it (tail) and find one event by id."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Message, TopicPartition

from ledger.domain import JournalEntry
from ledger.errors import CodecError, InfrastructureError, RejectedError, UsageError
from ledger.kafka import (
    make_consumer,
    positions,
    topic_partitions,
    watermarks,
)
from ledger.records import ReverseRef, entry_from_record
from ledger.settings import Settings
from ledger.wire import Codec


@dataclass(frozen=True)
class JournalRecord:
    partition: int
    offset: int
    key: str
    timestamp_ms: int
    entry: JournalEntry | None
    error: str | None = None

    @property
    def ref(self) -> ReverseRef:
        assert self.entry is not None
        return ReverseRef(self.entry.event_id, self.partition, self.offset)


def read_journal(
    settings: Settings, codec: Codec, from_beginning: bool = True, follow: bool = False,
    partitions: Sequence[int] | None = None, offset: int | None = None,
) -> Iterator[JournalRecord]:
    """Committed journal records; stops at the end unless follow is set. Of `partitions`
    (default: all), from `offset` if given, else from zero or from the end."""
    start = offset if offset is not None else 0 if from_beginning else OFFSET_END
    for msg in read_messages(settings, settings.topic("events"), follow, partitions, start):
        yield _decode(codec, msg.partition() or 0, msg.offset() or 0, msg.key(),
                      msg.timestamp()[1], msg.value())


def read_messages(settings: Settings, topic: str, follow: bool,
                  partitions: Sequence[int] | None = None, start: int = 0) -> Iterator[Message]:
    """Committed records of a topic's partitions (default: all) from offset `start`
    (OFFSET_END: the end); stops at the end unless follow is set."""
    parts = topic_partitions(settings, topic)
    chosen = sorted(set(partitions)) if partitions is not None else list(range(parts))
    absent = [p for p in chosen if not 0 <= p < parts]
    if absent:
        raise UsageError(f"{topic} has no partition {absent[0]} (it has 0 to {parts - 1})")
    consumer = make_consumer(settings, None, **{"fetch.wait.max.ms": 50})
    try:
        timeout = settings.tuning.kafka_request_s
        marks = {p: watermarks(consumer, TopicPartition(topic, p), timeout) for p in chosen}
        ends = {p: high for p, (_, high) in marks.items()}
        starts = {p: start for p in chosen}
        if start > 0:  # within the log: past the end librdkafka would restart at the beginning
            starts = {p: min(max(start, low), high) for p, (low, high) in marks.items()}
        if start == OFFSET_END:
            starts = dict(ends)
        yield from read_between(settings, consumer, topic, starts, ends, follow)
    finally:
        consumer.close()


def read_between(settings: Settings, consumer: Consumer, topic: str, starts: dict[int, int],
                 ends: dict[int, int], follow: bool = False) -> Iterator[Message]:
    """Committed records of `topic` from `starts` until every partition's position reached
    its end in `ends` (or forever if `follow`); a bounded read that makes no progress for
    tuning.read_stall_s fails rather than wait for ever."""
    consumer.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
    pending = {(topic, p): ends[p] for p in starts if starts[p] < ends[p]}
    at: dict[tuple[str, int], int] = {}
    progress_at, stall_s = time.monotonic(), settings.tuning.read_stall_s
    while follow or pending:
        for msg in consumer.consume(1000, timeout=settings.tuning.read_poll_s):
            if msg.error() is None:
                yield msg
        now_at = positions(consumer, {(topic, p): o for p, o in starts.items()})
        if now_at != at:  # records or transaction markers passed
            at, progress_at = now_at, time.monotonic()
        pending = {key: end for key, end in pending.items() if at[key] < end}
        if pending and not follow and time.monotonic() - progress_at > stall_s:
            raise InfrastructureError(
                f"no records from Kafka at {settings.bootstrap} for {stall_s:.0f}s while "
                f"{len(pending)} partitions of {topic} remain")


def _decode(
    codec: Codec, partition: int, offset: int, key: bytes | None, ts: int, value: bytes | None
) -> JournalRecord:
    key_text = (key or b"").decode("utf-8", "replace")
    try:
        entry = entry_from_record(codec.decode_as("event", value))
    except CodecError as e:
        return JournalRecord(partition, offset, key_text, ts, None, str(e))
    return JournalRecord(partition, offset, key_text, ts, entry)


def find_events(
    settings: Settings, event_ids: set[str], codec: Codec | None = None
) -> dict[str, JournalRecord]:
    """Committed journal records of the given event ids, in one scan."""
    found: dict[str, JournalRecord] = {}
    for record in read_journal(settings, codec or Codec()):
        if record.entry is not None and record.entry.event_id in event_ids:
            found[record.entry.event_id] = record
            if len(found) == len(event_ids):
                break
    return found


def find_event(settings: Settings, event_id: str, codec: Codec | None = None) -> JournalRecord:
    """The committed journal record of an event id (a scan; reversals are rare)."""
    found = find_events(settings, {event_id}, codec)
    if event_id not in found:
        raise RejectedError(f"no event {event_id} in {settings.topic('events')}")
    return found[event_id]


def latest_by_key(settings: Settings, topic_name: str, schema: str,
                  codec: Codec | None = None) -> dict[str, dict[str, Any]]:
    """The last committed record per key of a topic: the view a compacted topic converges to."""
    codec = codec or Codec()
    return {(msg.key() or b"").decode(): codec.decode_as(schema, msg.value())
            for msg in read_messages(settings, settings.topic(topic_name), follow=False)}
