"""Side channels of the processor: fetching a journal event by position, dead letters."""

from __future__ import annotations

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from ledger.domain import JournalEntry
from ledger.errors import CodecError
from ledger.kafka import committed, make_consumer, topic_partitions
from ledger.records import ReverseRef, entry_from_record
from ledger.settings import Settings
from ledger.wire import Codec


class JournalFetcher:
    """Reads one committed journal event at a known position (for reversals)."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings, self.codec = settings, codec
        self._consumer: Consumer | None = None

    def fetch(self, ref: ReverseRef) -> JournalEntry | str:
        """The event, or why it cannot be used; a position at or past the partition's end
        is refused at once (the caller is inside an open transaction)."""
        if self._consumer is None:
            self._consumer = make_consumer(self.settings, None, **{"fetch.wait.max.ms": 10})
        topic = self.settings.topic("events")
        tp = TopicPartition(topic, ref.partition, ref.offset)
        # A KafkaException here aborts and retries the batch: the broker's fault, not the record's.
        _, end = self._consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        if ref.offset >= end:
            return f"no event at {topic}[{ref.partition}]@{ref.offset}: the partition ends at {end}"
        self._consumer.assign([tp])
        for _ in range(50):
            for msg in self._consumer.consume(1, timeout=0.1):
                if msg.error() is not None:
                    continue
                return self._check(msg, ref)
        return f"no committed event at {topic}[{ref.partition}]@{ref.offset}"

    def _check(self, msg: Message, ref: ReverseRef) -> JournalEntry | str:
        if msg.offset() != ref.offset:
            return f"no event at offset {ref.offset} (next is {msg.offset()})"
        try:
            entry = entry_from_record(self.codec.decode_as("event", msg.value()))
        except CodecError as e:
            return f"event at {ref.partition}@{ref.offset} is undecodable: {e}"
        if entry.event_id != ref.event_id:
            return f"event at {ref.partition}@{ref.offset} is {entry.event_id}, not {ref.event_id}"
        return entry

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


# Kafka's producer refuses messages over ~1 MB (message.max.bytes); the original of a
# dead letter may already be that large, and the headers add to it.
DEAD_LETTER_MAX_BYTES = 990_000


def dead_letter(producer: Producer, topic: str, msg: Message, error: Exception) -> None:
    """The original bytes under the original key, with headers saying where and why.

    A record too large to copy with its headers keeps its first bytes and says so in a
    `truncated` header; the whole record stays at its source offset until retention.
    """
    key, value = msg.key(), msg.value()
    headers: list[tuple[str, str | bytes | None]] = [
        ("source_topic", (msg.topic() or "").encode()),
        ("source_partition", str(msg.partition()).encode()),
        ("source_offset", str(msg.offset()).encode()),
        ("error", f"{type(error).__name__}: {error}".encode()[:4096]),
    ]
    room = DEAD_LETTER_MAX_BYTES - sum(len(k) + len(v or b"") for k, v in headers)
    sizes = (len(key or b""), len(value or b""))
    if sum(sizes) > room:
        key = key[: room // 2] if key is not None else None
        value = value[: room - len(key or b"")] if value is not None else None
        headers.append(("truncated", f"key {sizes[0]} bytes, value {sizes[1]} bytes".encode()))
    producer.produce(topic, key=key, value=value, headers=headers)


def pending_commands(settings: Settings) -> int:
    """Committed commands beyond the processor group's offsets (routed credits included).

    Committed offsets can sit one below the end for good (a transaction marker takes an
    offset), so this reads what lies beyond them instead of comparing offsets.
    """
    from confluent_kafka import KafkaError

    topic = settings.topic("commands")
    consumer = make_consumer(
        settings, f"{settings.topic_prefix}.processor", **{"enable.partition.eof": True}
    )
    try:
        parts = [TopicPartition(topic, p) for p in range(topic_partitions(settings, topic))]
        start = [
            TopicPartition(topic, tp.partition, max(tp.offset, 0))
            for tp in committed(consumer, parts)
        ]
        consumer.assign(start)
        pending, seen = {tp.partition for tp in start}, 0
        while pending:
            for msg in consumer.consume(500, timeout=0.5):
                err = msg.error()
                if err is None:
                    seen += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
        return seen
    finally:
        consumer.close()
