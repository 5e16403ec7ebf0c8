"""KafkaJournalLookup: a journal event by its position; how many commands the group has left."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition

from ledger.domain import JournalEntry
from ledger.journal import read_between
from ledger.kafka import committed, make_consumer, topic_partitions, watermarks
from ledger.processor.kafka.offsets import StableOffsets, readable_end
from ledger.processor.lookup import checked_event
from ledger.processor.ports import NotReadableYet
from ledger.records import ReverseRef
from ledger.settings import Settings
from ledger.wire import Codec


class KafkaJournalLookup:
    """Reads one committed journal event at a known position (for reversals)."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings, self.codec = settings, codec
        self._consumer: Consumer | None = None
        self._offsets = StableOffsets(settings)

    def fetch(self, ref: ReverseRef) -> JournalEntry | str:
        """The event, or why it cannot be used; a position at or past the partition's end
        is refused at once (the caller is inside an open transaction). A position the read
        does not pass within the wait (a leader moving, another producer's transaction not
        yet settled) raises NotReadableYet: refusing then would be final."""
        if self._consumer is None:
            self._consumer = make_consumer(self.settings, None, **{"fetch.wait.max.ms": 10})
        consumer, topic = self._consumer, self.settings.topic("events")
        tp = TopicPartition(topic, ref.partition, ref.offset)
        end = readable_end(self._offsets, TopicPartition(topic, ref.partition))
        if ref.offset >= end:
            return f"no event at {topic}[{ref.partition}]@{ref.offset}: the partition ends at {end}"
        consumer.assign([tp])
        wait_s = self.settings.tuning.lookup_wait_s
        deadline = time.monotonic() + wait_s
        while True:
            for msg in consumer.consume(1, timeout=0.1):
                if msg.error() is None:
                    return checked_event(self.codec, ref, msg.offset() or 0, msg.value())
            # Past the position with no record at it: a transaction marker or aborted record.
            if consumer.position([TopicPartition(topic, ref.partition)])[0].offset > ref.offset:
                return f"no committed event at {topic}[{ref.partition}]@{ref.offset}"
            if time.monotonic() > deadline:
                raise NotReadableYet(
                    f"{topic}[{ref.partition}]@{ref.offset} not readable within {wait_s:g} s")

    def close(self) -> None:
        self._offsets.close()
        if self._consumer is not None:
            self._consumer.close()


def pending_commands(settings: Settings) -> int:
    """Committed commands beyond the processor group's offsets (routed credits included).

    Committed offsets can sit one below the end for good (a transaction marker takes an
    offset), so this reads what lies beyond them instead of comparing offsets.
    """
    topic = settings.topic("commands")
    consumer = make_consumer(settings, f"{settings.topic_prefix}.processor")
    try:
        parts = [TopicPartition(topic, p) for p in range(topic_partitions(settings, topic))]
        starts = {tp.partition: max(tp.offset, 0) for tp in committed(consumer, parts)}
        ends = {tp.partition: watermarks(consumer, tp, settings.tuning.kafka_request_s)[1]
                for tp in parts}
        return sum(1 for _ in read_between(settings, consumer, topic, starts, ends))
    finally:
        consumer.close()
