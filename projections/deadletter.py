"""<prefix>.deadletter: undecodable records with their origin, and counting them back."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer

from ledger.deadletters import headers_of
from ledger.errors import InfrastructureError
from ledger.kafka import make_consumer, make_producer
from ledger.settings import Settings
from projections.ingest import BadRecord
from projections.log import check_message_error, read_ranges, watermarks

HEADERS = ("source_topic", "source_partition", "source_offset", "error")


class DeadLetterSink:
    """Produces bad records durably (acks=all) before the batch that skips them commits."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic("deadletter")
        self._producer: Producer | None = None
        self.sent = 0

    def send(self, bad: Sequence[BadRecord]) -> None:
        """Produce and flush; raise InfrastructureError unless every record is acknowledged."""
        if not bad:
            return
        if self._producer is None:
            self._producer = make_producer(self.settings)
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err.str())

        for b in bad:
            headers: list[tuple[str, str | bytes | None]] = [
                (HEADERS[0], b.topic), (HEADERS[1], str(b.partition)),
                (HEADERS[2], str(b.offset)), (HEADERS[3], b.error)]
            self._producer.produce(self.topic, value=b.value, key=b.key, headers=headers,
                                   on_delivery=on_delivery)
        left = self._producer.flush(self.settings.tuning.deadletter_flush_s)
        if left or failures:
            raise InfrastructureError(
                f"cannot dead-letter {len(bad)} records to {self.topic} at "
                f"{self.settings.bootstrap}: {failures[0] if failures else 'flush timed out'}")
        self.sent += len(bad)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.settings.tuning.deadletter_flush_s)


def dead_lettered(settings: Settings, source_topics: Sequence[str]) -> set[tuple[str, int, int]]:
    """Distinct (topic, partition, offset) of the dead-lettered records from source_topics."""
    consumer = make_consumer(settings, None)
    topic = settings.topic("deadletter")
    try:
        ranges = {k: (low, high) for k, (low, high) in watermarks(consumer, settings, [topic])
                  .items()}
        seen: set[tuple[str, int, int]] = set()
        for msgs in read_ranges(consumer, settings, ranges):
            for m in msgs:
                if m.error() is not None and check_message_error(settings, m):
                    continue
                h = headers_of(m)
                if h.get("source_topic") in source_topics:
                    seen.add((h["source_topic"], int(h.get("source_partition", -1)),
                              int(h.get("source_offset", -1))))
        return seen
    finally:
        consumer.close()

