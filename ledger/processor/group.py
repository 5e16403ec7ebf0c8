"""The processor's place in its consumer group: partitions owned, restored, lost, rejoined.

On assignment each partition's state is brought up to date from its changelogs after
the previous owner's last commit is stable; on revocation the partition stops being
owned at once, so nothing is decided for it afterwards. A consumer that fails fatally
is replaced by a new one under the same static member id.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from ledger.health import LIFECYCLE
from ledger.kafka import committed, make_consumer
from ledger.processor.restore import ChangelogReader
from ledger.processor.state import ProcessorStats
from ledger.processor.store import StateStore
from ledger.processor.txn import RestartBudget
from ledger.settings import Settings

log = logging.getLogger("ledger.processor")

ConsumerFactory = Callable[..., Consumer]
# A pending transactional offset commit is resolved within the transaction timeout.
STABLE_OFFSETS_TIMEOUT_S = 90.0


class GroupMember:
    """The consumer of points.commands and the partitions it owns right now (`owned`)."""

    def __init__(
        self,
        settings: Settings,
        instance_id: str,
        store: StateStore,
        reader: ChangelogReader,
        stats: ProcessorStats,
        make: ConsumerFactory = make_consumer,
    ) -> None:
        self.settings, self.instance_id = settings, instance_id
        self.store, self.reader, self.stats, self._make = store, reader, stats, make
        self.topic = settings.topic("commands")
        self.consumer: Consumer | None = None
        self.owned: set[int] = set()
        self.epoch = 0  # changes with every assignment or revocation
        self.assigned = False  # an assignment (maybe empty) taken and not released since
        self._budget = RestartBudget("consumer failed fatally")

    def owns(self, partition: int) -> bool:
        return partition in self.owned

    def subscribe(self) -> Consumer:
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
        self._release(set(self.owned))
        with contextlib.suppress(KafkaException, RuntimeError):
            self.consumer.close()
        self.subscribe()

    def rewind(self, firsts: dict[int, int]) -> None:
        """Seek owned partitions back to where an aborted batch began."""
        assert self.consumer is not None
        for partition, offset in firsts.items():
            if partition in self.owned:
                self.consumer.seek(TopicPartition(self.topic, partition, offset))

    def resync(self) -> None:
        """After a transaction of unknown outcome: state and positions from the log.

        The store holds only batches known to be committed; the changelogs and the
        group's stable committed offsets say what happened to the last one.
        """
        self.stats.resyncs += 1
        log.warning("re-synchronising partitions %s from the committed offsets and the "
                    "changelogs", sorted(self.owned))
        self.epoch += 1
        positions = self._stable_positions(sorted(self.owned))
        for tp in positions:
            self.reader.restore(self.store, tp.partition)
        assert self.consumer is not None
        for tp in positions:
            self.consumer.seek(tp)

    def _stable_positions(self, partitions: list[int]) -> list[TopicPartition]:
        """Where each partition resumes: its stable committed offset, or the beginning."""
        assert self.consumer is not None
        tps = [TopicPartition(self.topic, p) for p in partitions]
        found = committed(self.consumer, tps, STABLE_OFFSETS_TIMEOUT_S) if tps else []
        return [
            TopicPartition(self.topic, tp.partition, tp.offset if tp.offset >= 0
                           else OFFSET_BEGINNING)
            for tp in found
        ]

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.epoch += 1
        # The stable offsets first: then the previous owner's last transaction is over
        # and the changelogs' ends include it.
        self._stable_positions([tp.partition for tp in partitions])
        for tp in partitions:
            self.reader.restore(self.store, tp.partition)
            self.owned.add(tp.partition)
        self.assigned = True
        LIFECYCLE.info("processor %s owns partitions %s", self.instance_id, sorted(self.owned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release({tp.partition for tp in partitions})
        log.info(
            "processor %s released partitions %s; owns %s",
            self.instance_id,
            sorted(tp.partition for tp in partitions),
            sorted(self.owned),
        )

    def _release(self, partitions: set[int]) -> None:
        self.epoch += 1
        self.assigned = False
        self.owned -= partitions
        for partition in partitions:
            self.store.forget_cache(partition)


def fatal_error(msgs: list[Message]) -> KafkaError | None:
    """The first fatal consumer error among consumed messages, if any."""
    return next((m.error() for m in msgs if _is_fatal(m)), None)


def _is_fatal(msg: Message) -> bool:
    # A consumer's fatal error arrives as code _FATAL, without the fatal flag set.
    err = msg.error()
    return err is not None and (err.fatal() or err.code() == KafkaError._FATAL)
