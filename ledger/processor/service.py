"""The command processor: the single, exactly-once writer of the journal.

A consumer group on points.commands; each instance owns the accounts that hash
to its partitions. Per batch, inside one Kafka transaction: decide every
command, write journal events, account states, balance snapshots, results and
routed credits, and send the consumed offsets to the transaction. All of it
commits together or not at all.

The pieces: processor_group (partitions owned and restored), processor_handler
(one record decided), processor_txn (the transactional producers taking turns, their
watchdog and replacement), processor_state (owned state and the batch's overlay).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from ledger.codec import Codec
from ledger.errors import InfrastructureError
from ledger.kafka import consume_ready, consumer_lag, topic_partitions
from ledger.processor.group import GroupMember, fatal_error
from ledger.processor.handler import CommandHandler, Poisoned, position_of
from ledger.processor.kafka_io import JournalFetcher
from ledger.processor.state import AccountsTable, Overlay, PartitionState, ProcessorStats
from ledger.processor.txn import Stuck, Transactions, is_fenced
from ledger.settings import Settings
from ledger.topics import guard_topics

log = logging.getLogger("ledger.processor")


class CommandProcessor:
    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        instance_id: str,
        max_batch: int = 2000,
        batch_timeout: float = 0.1,
    ) -> None:
        self.settings, self.codec = settings, codec
        self.instance_id = instance_id
        self.max_batch, self.batch_timeout = max_batch, batch_timeout
        self.stats = ProcessorStats()
        self.committed: dict[int, PartitionState] = {}
        self.accounts = AccountsTable(settings, codec)
        self.overlay = Overlay(self.committed, self.accounts)
        self.fetcher = JournalFetcher(settings, codec)
        self.handler = CommandHandler(settings, codec, self.overlay, self.stats, self.fetcher)
        self.group = GroupMember(
            settings, codec, instance_id, self.committed, self.overlay, self.stats
        )
        self.txn = Transactions(settings, instance_id, self.stats)
        self.topic = self.handler.topic
        self._stop = threading.Event()
        self.running = False
        self.lag: dict[int, int] = {}  # records behind the end per owned partition (metrics)
        self.metrics_server: Any = None

    # The live clients: replaced on failures (and by tests that inject them).
    @property
    def consumer(self) -> Consumer | None:
        return self.group.consumer

    @consumer.setter
    def consumer(self, consumer: Consumer | None) -> None:
        self.group.consumer = consumer

    @property
    def producer(self) -> Producer | None:
        return self.txn.producer

    @producer.setter
    def producer(self, producer: Producer | None) -> None:
        self.txn.producer = producer

    # --- lifecycle -----------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        guard_topics(self.settings)
        self.handler.signer.warn_if_development()
        self.partitions = topic_partitions(self.settings, self.topic["commands"])
        self.handler.partitions = self.partitions
        self.txn.start()
        self.accounts.start()
        self.group.subscribe()
        log.info("processor %s started on %s", self.instance_id, self.settings.bootstrap)
        if on_ready:
            on_ready()
        self.running = True
        try:
            self._loop()
        finally:
            self.running = False
            log.info("processor %s stopping: %s", self.instance_id, self.stats)
            if self.consumer is not None:
                self.consumer.close()
            self.accounts.stop()
            self.fetcher.close()
            if self.metrics_server is not None:
                self.metrics_server.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            consumer = self.consumer
            assert consumer is not None
            msgs = consume_ready(consumer, self.max_batch, self.batch_timeout)
            fatal = fatal_error(msgs)
            if fatal is not None:  # before any of the batch is handled: nothing to undo
                self.group.rejoin(fatal)
                continue
            self.lag = consumer_lag(consumer, self.topic["commands"], sorted(self.committed))
            if msgs:
                self._process_batch(msgs)

    # --- one batch, one transaction -------------------------------------------

    def _process_batch(self, msgs: list[Message]) -> None:
        started = time.monotonic()
        firsts: dict[int, int] = {}  # where to rewind to if the transaction fails, known first
        for msg in msgs:
            if msg.error() is None:
                firsts.setdefault(*position_of(msg))
        try:
            self._transact(msgs)
        except KafkaException as e:
            if is_fenced(e):  # another instance took this transactional id over
                self._discard_batch()
                raise InfrastructureError(f"processor fenced: {e.args[0].str()}") from e
            self.txn.recover(e)
            self._forget_batch(firsts)
            return
        except Stuck as stuck:
            self.txn.replace(stuck.call)
            self._forget_batch(firsts)
            return
        except Poisoned as p:
            self._poisoned(p)
            self.txn.abort()
            self._forget_batch(firsts)
            return
        self._committed(started)

    def _transact(self, msgs: list[Message]) -> None:
        """Decide the batch in one transaction, with the consumed offsets, and commit it."""
        consumer = self.consumer
        assert consumer is not None
        self.handler.producer = self.txn.begin()
        offsets: dict[int, int] = {}
        for msg in msgs:
            if msg.error() is not None:
                log.warning("consumer error: %s", msg.error())
                continue
            partition, offset = position_of(msg)
            offsets[partition] = offset + 1
            self.handler.handle_guarded(msg)
        self.handler.flush_snapshots()
        positions = [TopicPartition(self.topic["commands"], p, o) for p, o in offsets.items()]
        self.txn.commit(positions, consumer.consumer_group_metadata())

    def _committed(self, started: float) -> None:
        self.overlay.merge()
        # The committed state only grows (balances, the outcomes of the dedup window); left
        # to the collector, each full collection walks all of it: 100-250 ms pauses at 200k
        # outcomes, the latency p99. Frozen, a collection sees what the last batch made.
        # The hot path makes no reference cycles, so no garbage is frozen for good.
        gc.freeze()
        self.stats.batches += 1
        self.stats.last_batch_ms = (time.monotonic() - started) * 1000

    def _poisoned(self, p: Poisoned) -> None:
        self.handler.poisoned[p.position] = p.error
        log.error(
            "record %s[%d]@%d cannot be processed (%s: %s); "
            "retrying the batch without it and dead-lettering it",
            self.topic["commands"],
            *p.position,
            type(p.error).__name__,
            str(p.error)[:300],
        )

    def _discard_batch(self) -> None:
        self.overlay.reset()
        self.handler.discard()

    def _forget_batch(self, firsts: dict[int, int]) -> None:
        """The batch's transaction is gone: drop its changes and consume it again."""
        self._discard_batch()
        self.stats.aborts += 1
        self.group.rewind(firsts)
