"""Reading bounded ranges of the ledger's topics, read_committed, without a group."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from ledger.errors import InfrastructureError, StoreError
from ledger.kafka import reached_ends, unreachable
from ledger.settings import Settings
from projections.store import PositionKey

if TYPE_CHECKING:
    from projections.ports import ConsumedRecord

LOG = logging.getLogger("ledger.projections")

Ranges = dict[PositionKey, tuple[int, int]]  # (topic, partition) -> [start, end)


def partitions_of(consumer: Consumer, settings: Settings, topic: str) -> list[int]:
    try:
        listed = consumer.list_topics(topic, timeout=settings.tuning.kafka_request_s)
        meta = listed.topics.get(topic)
    except KafkaException as e:
        raise unreachable(settings, e) from e
    if meta is None or meta.error is not None or not meta.partitions:
        raise InfrastructureError(f"topic {topic} does not exist at {settings.bootstrap}: "
                                  "run `ledger topics create`")
    return sorted(meta.partitions)


def watermarks(consumer: Consumer, settings: Settings,
               topics: Iterable[str]) -> dict[PositionKey, tuple[int, int]]:
    """(log start offset, last stable offset) of every partition of the topics.

    The consumer reads read_committed, so the high mark is the last stable offset: an
    open transaction's records are not counted as reachable.
    """
    out: dict[PositionKey, tuple[int, int]] = {}
    for topic in topics:
        for p in partitions_of(consumer, settings, topic):
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                           timeout=settings.tuning.kafka_request_s,
                                                           cached=False)
            except KafkaException as e:
                raise unreachable(settings, e) from e
            out[(topic, p)] = (low, high)
    return out


def check_log_start(key: PositionKey, position: int, low: int) -> None:
    """Refuse a position below the log start: the records in between were deleted."""
    if position < low:
        topic, p = key
        raise StoreError(
            f"stored position {position} of {topic}[{p}] is below its log start offset {low}: "
            f"records {position}..{low - 1} were deleted from Kafka, so this store cannot be "
            "brought up to date. Restore the topic, or start a new store from what is left "
            "(`ledger replay` refuses a journal that does not start at 0).")


def read_ranges(consumer: Consumer, settings: Settings, ranges: Ranges) -> Iterator[list[Message]]:
    """Messages of every partition in [start, end), in batches; ends when all are reached.

    Offsets have holes (transaction markers, aborted records): a partition is done when
    the consumer's position reaches its end, not when offset end-1 was seen.
    """
    todo = {k: r for k, r in ranges.items() if r[0] < r[1]}
    if not todo:
        return
    consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _) in todo.items()])
    last_progress = time.monotonic()
    while todo:
        msgs = consumer.consume(settings.tuning.read_consume_max, settings.tuning.read_poll_s)
        if msgs:
            last_progress = time.monotonic()
        done, over = _reached(consumer, todo)
        if over:
            msgs = [m for m in msgs
                    if (m.topic(), m.partition()) not in over
                    or (m.offset() or 0) < over[(m.topic() or "", m.partition() or 0)]]
        if msgs:
            yield msgs
        for key in done:
            consumer.pause([TopicPartition(*key)])
            del todo[key]
        stall_s = settings.tuning.read_stall_s
        if time.monotonic() - last_progress > stall_s:
            raise InfrastructureError(f"no records from Kafka at {settings.bootstrap} for "
                                      f"{stall_s:.0f}s while {len(todo)} partitions remain")
    consumer.unassign()


def _reached(consumer: Consumer, todo: Ranges) -> tuple[list[PositionKey], dict[PositionKey, int]]:
    """Partitions whose position reached their end; ends of those that went past it."""
    at = reached_ends(consumer, {key: end for key, (_, end) in todo.items()})
    return list(at), {key: todo[key][1] for key, offset in at.items() if offset > todo[key][1]}


def check_message_error(settings: Settings, m: ConsumedRecord) -> bool:
    """True if m is an error event to skip; raises if the error is fatal or loses data."""
    err = m.error()
    if err is None:
        return False
    if err.code() == KafkaError._AUTO_OFFSET_RESET:
        raise StoreError(f"{m.topic()}[{m.partition()}]: the position is outside the log "
                         f"({err.str()}): records were deleted under the store")
    if err.fatal():
        raise unreachable(settings, KafkaException(err))
    LOG.warning("Kafka: %s", err.str())
    return True
