"""The dead-letter topic as the projector uses it: origin headers, and counting records back.

The sinks that write it are the adapters KafkaDeadLetterSink (projections.kafka) and
InMemoryDeadLetterSink (projections.memory); `dead_lettered` is verify's count of them."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.deadletters import headers_of
from ledger.kafka import make_consumer
from ledger.settings import Settings
from projections.ingest import BadRecord
from projections.log import check_message_error, read_ranges, watermarks

HEADERS = ("source_topic", "source_partition", "source_offset", "error")


def headers_for(b: BadRecord) -> list[tuple[str, str | bytes | None]]:
    """The headers naming a bad record's origin and what was wrong with it."""
    return [(HEADERS[0], b.topic), (HEADERS[1], str(b.partition)),
            (HEADERS[2], str(b.offset)), (HEADERS[3], b.error)]


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

