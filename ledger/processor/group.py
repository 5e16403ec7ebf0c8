"""The processor's place in its consumer group: partitions owned, restored, lost, rejoined.

On assignment each partition's owned state is restored from the changelogs
(points.balances, points.results); on revocation it is dropped. A consumer that
fails fatally is replaced by a new one under the same static member id.
"""

from __future__ import annotations

import contextlib
import logging

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from ledger.codec import Codec
from ledger.kafka import make_consumer
from ledger.processor.state import Overlay, PartitionState, ProcessorStats, restore_partition
from ledger.processor.txn import RestartBudget
from ledger.settings import Settings

log = logging.getLogger("ledger.processor")


class GroupMember:
    """The consumer of points.commands and the partitions it owns (`committed`)."""

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        instance_id: str,
        committed: dict[int, PartitionState],
        overlay: Overlay,
        stats: ProcessorStats,
    ) -> None:
        self.settings, self.codec, self.instance_id = settings, codec, instance_id
        self.committed, self.overlay, self.stats = committed, overlay, stats
        self.topic = settings.topic("commands")
        self.consumer: Consumer | None = None
        self._budget = RestartBudget("consumer failed fatally")

    def subscribe(self) -> Consumer:
        consumer = make_consumer(
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
            },
        )
        consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self.consumer = consumer
        return consumer

    def rejoin(self, error: KafkaError) -> None:
        """Replace a consumer that failed fatally, so the service outlives a broker failover.

        After the group coordinator moves (a broker lost), the broker may declare this very
        static member fenced (FENCED_INSTANCE_ID) although no other instance runs; the
        consumer is then dead for good. A new one rejoins under the same instance id and
        restores its partitions as on any assignment. Fencing by a real second instance
        with the same id also fences our transactional producer, which ends the run; the
        limit below stops a rejoin loop all the same.
        """
        assert self.consumer is not None
        self._budget.spend(error.str())
        log.error("consumer failed fatally (%s); rejoining with a new consumer", error.str())
        self.stats.rejoins += 1
        self.committed.clear()  # restored from the changelogs on the next assignment
        self.overlay.reset()
        with contextlib.suppress(KafkaException, RuntimeError):
            self.consumer.close()
        self.subscribe()

    def rewind(self, firsts: dict[int, int]) -> None:
        """Seek owned partitions back to where an aborted batch began."""
        assert self.consumer is not None
        for partition, offset in firsts.items():
            if partition in self.committed:
                self.consumer.seek(TopicPartition(self.topic, partition, offset))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.committed[tp.partition] = restore_partition(
                self.settings, self.codec, tp.partition
            )
        log.info("processor %s owns partitions %s", self.instance_id, sorted(self.committed))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.committed.pop(tp.partition, None)
        log.info(
            "processor %s released partitions %s; owns %s",
            self.instance_id,
            sorted(tp.partition for tp in partitions),
            sorted(self.committed),
        )


def fatal_error(msgs: list[Message]) -> KafkaError | None:
    """The first fatal consumer error among consumed messages, if any."""
    return next((m.error() for m in msgs if _is_fatal(m)), None)


def _is_fatal(msg: Message) -> bool:
    # A consumer's fatal error arrives as code _FATAL, without the fatal flag set.
    err = msg.error()
    return err is not None and (err.fatal() or err.code() == KafkaError._FATAL)
