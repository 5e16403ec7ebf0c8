"""KafkaJournalSource: the journal's topics through one confluent-kafka consumer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence

from confluent_kafka import Consumer, KafkaException, TopicPartition

from ledger.kafka import make_consumer, unreachable
from ledger.settings import Settings
from projections.identity import journal_of
from projections.log import watermarks
from projections.ports import ConsumedRecord, Rebalance, Watermarks
from projections.store import JournalIdentity, PositionKey


class KafkaJournalSource:
    """A read_committed consumer of the store's group (`group`), made on first use.

    No offsets are committed: the store's positions say where to read, so a position
    the log no longer holds is an error (auto.offset.reset=error), never a silent jump.
    """

    def __init__(self, settings: Settings, group: str) -> None:
        self.settings, self.group = settings, group
        self._consumer: Consumer | None = None

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = make_consumer(self.settings, self.group,
                                           **{"auto.offset.reset": "error"})
        return self._consumer

    def journal(self) -> JournalIdentity:
        return journal_of(self.settings, self.consumer)

    def watermarks(self, topics: Iterable[str]) -> Watermarks:
        return watermarks(self.consumer, self.settings, topics)

    def subscribe(self, topics: Sequence[str], on_assign: Rebalance, on_revoke: Rebalance,
                  on_lost: Rebalance) -> None:
        def call(callback: Rebalance) -> Callable[[Consumer, list[TopicPartition]], None]:
            def rebalanced(_: Consumer, tps: list[TopicPartition]) -> None:
                callback([(tp.topic, tp.partition) for tp in tps])
            return rebalanced

        self.consumer.subscribe(list(topics), on_assign=call(on_assign),
                                on_revoke=call(on_revoke), on_lost=call(on_lost))

    def assign(self, positions: dict[PositionKey, int]) -> None:
        self.consumer.assign([TopicPartition(t, p, o) for (t, p), o in positions.items()])

    def consume(self, max_records: int, timeout_s: float) -> list[ConsumedRecord]:
        try:
            return list(self.consumer.consume(max_records, timeout_s))
        except KafkaException as e:
            raise unreachable(self.settings, e) from e

    def positions(self, keys: Iterable[PositionKey]) -> dict[PositionKey, int]:
        tps = self.consumer.position([TopicPartition(t, p) for t, p in keys])
        return {(tp.topic, tp.partition): tp.offset for tp in tps if tp.offset >= 0}

    def seek(self, positions: dict[PositionKey, int]) -> None:
        for (topic, partition), offset in positions.items():
            self.consumer.seek(TopicPartition(topic, partition, offset))

    def cached_ends(self, keys: Iterable[PositionKey]) -> dict[PositionKey, int]:
        ends = {}
        for topic, partition in keys:
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                             cached=True)
            if high >= 0:
                ends[(topic, partition)] = high
        return ends

    def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(KafkaException, RuntimeError):
                self._consumer.close()
            self._consumer = None
