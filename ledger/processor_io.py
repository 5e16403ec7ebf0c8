"""Side channels of the processor: fetching a journal event by position, dead letters."""

from __future__ import annotations

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from ledger.codec import Codec
from ledger.domain import JournalEntry
from ledger.errors import CodecError
from ledger.kafka import make_consumer
from ledger.records import ReverseRef, entry_from_record
from ledger.settings import Settings


class JournalFetcher:
    """Reads one committed journal event at a known position (for reversals)."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings, self.codec = settings, codec
        self._consumer: Consumer | None = None

    def fetch(self, ref: ReverseRef) -> JournalEntry | str:
        """The event, or why it cannot be used."""
        if self._consumer is None:
            self._consumer = make_consumer(self.settings, None, **{"fetch.wait.max.ms": 10})
        topic = self.settings.topic("events")
        self._consumer.assign([TopicPartition(topic, ref.partition, ref.offset)])
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


def dead_letter(producer: Producer, topic: str, msg: Message, error: Exception) -> None:
    """The original bytes under the original key, with headers saying where and why."""
    producer.produce(
        topic,
        key=msg.key(),
        value=msg.value(),
        headers=[
            ("source_topic", (msg.topic() or "").encode()),
            ("source_partition", str(msg.partition()).encode()),
            ("source_offset", str(msg.offset()).encode()),
            ("error", f"{type(error).__name__}: {error}".encode()[:4096]),
        ],
    )
