"""KafkaJournalLookup: a journal event by its position; how many commands the group has left."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from ledger.domain import JournalEntry
from ledger.kafka import committed, make_consumer, topic_partitions
from ledger.processor.lookup import checked_event
from ledger.records import ReverseRef
from ledger.settings import Settings
from ledger.wire import Codec


class KafkaJournalLookup:
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
                return checked_event(self.codec, ref, msg.offset() or 0, msg.value())
        return f"no committed event at {topic}[{ref.partition}]@{ref.offset}"

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


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
