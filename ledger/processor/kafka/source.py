"""KafkaCommandSource: the commands topic through a confluent-kafka group consumer."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from ledger.kafka import committed, consumer_lag, make_consumer, topic_partitions
from ledger.processor.ports import BEGINNING, Record, SourceFatal
from ledger.settings import Settings
from ledger.topics import guard_dedup_window, guard_topics

log = logging.getLogger("ledger.processor")

ConsumerFactory = Callable[..., Consumer]
# A pending transactional offset commit is resolved within the transaction timeout.
STABLE_OFFSETS_TIMEOUT_S = 90.0


class KafkaCommandSource:
    """One static member of the processor group on points.commands."""

    def __init__(self, settings: Settings, instance_id: str,
                 make: ConsumerFactory = make_consumer) -> None:
        self.settings, self.instance_id, self._make = settings, instance_id, make
        self.topic = settings.topic("commands")
        self.consumer: Consumer | None = None
        self._callbacks: tuple[Callable[[list[int]], None], Callable[[list[int]], None]] | None
        self._callbacks = None

    def open(self) -> int:
        guard_topics(self.settings)
        guard_dedup_window(self.settings)
        return topic_partitions(self.settings, self.topic)

    def subscribe(self, on_assign: Callable[[list[int]], None],
                  on_revoke: Callable[[list[int]], None]) -> None:
        self._callbacks = on_assign, on_revoke
        consumer = self._make(
            self.settings,
            f"{self.settings.topic_prefix}.processor",
            **{
                "fetch.wait.max.ms": 5,
                # With a backlog the fetch queue stays over its thresholds; the ledger's
                # default of no backoff (for replays) then spins the fetcher thread at half
                # a core, a core the broker and this loop need. It holds seconds of work.
                "fetch.queue.backoff.ms": 20,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1000,
                "partition.assignment.strategy": "range",
                # Static membership: a restarted instance takes its partitions back at once
                # instead of waiting for the dead member's session to time out.
                "group.instance.id": self.instance_id,
                # KIP-447: with isolation.level=read_committed (the ledger's default)
                # librdkafka fetches committed offsets with require_stable, so they come
                # only once no transaction that commits offsets for them is pending: a new
                # owner never starts from an offset its predecessor is about to move.
            },
        )

        def assigned(_: Consumer, tps: list[TopicPartition]) -> None:
            on_assign([tp.partition for tp in tps])

        def revoked(_: Consumer, tps: list[TopicPartition]) -> None:
            on_revoke([tp.partition for tp in tps])

        consumer.subscribe([self.topic], on_assign=assigned, on_revoke=revoked,
                           on_lost=revoked)
        self.consumer = consumer

    def consume(self, max_records: int, timeout_s: float) -> list[Record]:
        """Wait up to `timeout_s` for the first record, then take what else is fetched.

        consume(n, timeout) waits for n records or the whole timeout, which adds the
        timeout to every outcome's latency at low rates; this returns once work exists.
        """
        consumer = self.consumer
        assert consumer is not None
        first = consumer.poll(timeout_s)
        if first is None:
            return []
        msgs = [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]
        good: list[Record] = [m for m in msgs if m.error() is None]
        if len(good) < len(msgs):
            self._errors(msgs)
        return good

    def _errors(self, msgs: list[Message]) -> None:
        for msg in msgs:
            err = msg.error()
            # A consumer's fatal error arrives as code _FATAL, without the fatal flag set.
            if err is not None and (err.fatal() or err.code() == KafkaError._FATAL):
                raise SourceFatal(err.str())
        for msg in msgs:
            if msg.error() is not None:
                log.warning("consumer error: %s", msg.error())

    def seek(self, positions: dict[int, int]) -> None:
        assert self.consumer is not None
        for partition, offset in positions.items():
            self.consumer.seek(TopicPartition(self.topic, partition, offset))

    def committed(self, partitions: list[int]) -> dict[int, int]:
        assert self.consumer is not None
        if not partitions:
            return {}
        tps = [TopicPartition(self.topic, p) for p in partitions]
        found = committed(self.consumer, tps, STABLE_OFFSETS_TIMEOUT_S)
        return {tp.partition: tp.offset if tp.offset >= 0 else BEGINNING for tp in found}

    def lag(self, partitions: list[int]) -> dict[int, int]:
        assert self.consumer is not None
        return consumer_lag(self.consumer, self.topic, partitions)

    def group(self) -> Any:
        assert self.consumer is not None
        return self.consumer.consumer_group_metadata()

    def reopen(self) -> None:
        """After the group coordinator moves (a broker lost), the broker may declare this
        very static member fenced (FENCED_INSTANCE_ID) although no other instance runs; the
        consumer is then dead for good. A new one joins under the same instance id."""
        assert self._callbacks is not None
        self.close()
        self.subscribe(*self._callbacks)

    def close(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                self.consumer.close()
            self.consumer = None
