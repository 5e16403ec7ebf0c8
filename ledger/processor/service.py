"""The command processor's loop: consume a batch, decide it in one transaction, commit or recover.

A consumer group on points.commands; each instance owns the accounts that hash to its
partitions. Per batch, inside one Kafka transaction: decide every command, write journal
events, account states, balance snapshots, guards, results and routed credits, and send
the consumed offsets to the transaction. All of it commits together or not at all.

The pieces: group (partitions owned and restored), handler (one record decided), txn
(transactional producers, commit by the book), state (the batch's overlay), store (the
on-disk state), restore (changelog tails after a stable commit).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException, Message, TopicPartition

from ledger.credits import CreditSigner
from ledger.domain import DedupWindow
from ledger.errors import InfrastructureError
from ledger.health import LIFECYCLE, Heartbeat, LatencyHistogram
from ledger.kafka import consume_ready, consumer_lag, make_consumer, make_producer, topic_partitions
from ledger.processor.accounts_table import AccountsTable
from ledger.processor.group import ConsumerFactory, GroupMember, fatal_error
from ledger.processor.handler import CommandHandler, Poisoned, Router, position_of
from ledger.processor.kafka_io import JournalFetcher
from ledger.processor.restore import ChangelogReader
from ledger.processor.state import Overlay, ProcessorStats
from ledger.processor.store import StateStore
from ledger.processor.txn import (
    TXN_TIMEOUT_S,
    CommitUnknown,
    ProducerFactory,
    Stuck,
    Transactions,
    is_fenced,
)
from ledger.settings import Settings
from ledger.topics import guard_dedup_window, guard_topics
from ledger.wire import Codec

log = logging.getLogger("ledger.processor")


@dataclass(frozen=True)
class ProcessorTuning:
    """How the loop batches and how often it checkpoints and prunes its store."""

    max_batch: int = 2000
    batch_timeout_s: float = 0.1
    checkpoint_every_s: float = 5.0
    prune_every_s: float = 1.0
    prune_limit: int = 20_000
    txn_timeout_s: float = TXN_TIMEOUT_S


@dataclass(frozen=True)
class ProcessorClients:
    """How the processor makes its Kafka clients: the seam where a test injects a fault."""

    producer: ProducerFactory = make_producer
    consumer: ConsumerFactory = make_consumer


class CommandProcessor:
    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        instance_id: str,
        signer: CreditSigner,
        tuning: ProcessorTuning = ProcessorTuning(),
        clients: ProcessorClients = ProcessorClients(),
    ) -> None:
        self.settings, self.codec, self.instance_id = settings, codec, instance_id
        self.tuning = tuning
        self.stats = ProcessorStats()
        self.window = window = DedupWindow(int(settings.dedup_window_s * 1000))
        self.store = StateStore(state_file(settings, instance_id))
        self.accounts = AccountsTable(settings, codec)
        self.router = Router()
        self.group = GroupMember(settings, instance_id, self.store,
                                 ChangelogReader(settings, codec, window), self.stats,
                                 clients.consumer)
        self.overlay = Overlay(self.store, self.group.owns, self.accounts.known,
                               self.router.account)
        self.fetcher = JournalFetcher(settings, codec)
        self.handler = CommandHandler(settings, codec, self.overlay, self.stats, self.fetcher,
                                      self.router, signer, window)
        self.txn = Transactions(settings, instance_id, self.stats, clients.producer,
                                tuning.txn_timeout_s)
        self.topic = settings.topic("commands")
        self._stop = threading.Event()
        self.heartbeat = Heartbeat()  # /healthz: the loop runs and goes round
        self.batch_latency = LatencyHistogram()
        self.lag: dict[int, int] = {}  # records behind the end per owned partition (metrics)
        self.metrics_server: Any = None
        self._next_checkpoint = self._next_prune = 0.0
        self._pending: tuple[int, dict[int, dict[str, int]]] | None = None

    @property
    def consumer(self) -> Any:
        return self.group.consumer

    # --- lifecycle -----------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        guard_topics(self.settings)
        guard_dedup_window(self.settings)
        self.store.open()
        self.router.partitions = topic_partitions(self.settings, self.topic)
        self.txn.start()
        self.accounts.start()
        self.group.subscribe()
        metrics = self.metrics_server.url if self.metrics_server is not None else "off"
        LIFECYCLE.info("serve started: instance %s, brokers %s, topics %s.*, state %s, "
                       "metrics %s", self.instance_id, self.settings.bootstrap,
                       self.settings.topic_prefix, self.store.path, metrics)
        if on_ready:
            on_ready()
        self.heartbeat.beat()
        try:
            self._loop()
        finally:
            self.heartbeat.stop()
            LIFECYCLE.info("serve stopped: instance %s, %s", self.instance_id, self.stats)
            if self.consumer is not None:
                self.consumer.close()
            self.accounts.stop()
            self.fetcher.close()
            self.store.close()
            if self.metrics_server is not None:
                self.metrics_server.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.heartbeat.beat()
            consumer = self.consumer
            assert consumer is not None
            epoch = self.group.epoch
            msgs = consume_ready(consumer, self.tuning.max_batch, self.tuning.batch_timeout_s)
            fatal = fatal_error(msgs)
            if fatal is not None:  # before any of the batch is handled: nothing to undo
                self.group.rejoin(fatal)
                continue
            if self.group.epoch != epoch and msgs:
                # Partitions moved while the batch was fetched: some of it may predate its
                # partition's new assignment. Decide none of it; resume from the group.
                self.stats.dropped_unowned += len(msgs)
                self.group.resync()
                continue
            self.lag = consumer_lag(consumer, self.topic, sorted(self.group.owned))
            if msgs:
                self._process_batch(msgs)
            self._housekeeping()

    # --- one batch, one transaction -------------------------------------------

    def _process_batch(self, msgs: list[Message]) -> None:
        started = time.monotonic()
        owned = [m for m in msgs if m.error() is not None or self.group.owns(m.partition() or 0)]
        self.stats.dropped_unowned += len(msgs) - len(owned)
        firsts: dict[int, int] = {}  # where to rewind to if the transaction aborts
        for msg in owned:
            if msg.error() is None:
                firsts.setdefault(*position_of(msg))
        if not firsts:
            return
        try:
            self._transact(owned)
        except KafkaException as e:
            self._failed(e, firsts)
            return
        except (Stuck, CommitUnknown) as unknown:
            self._unknown(str(unknown))
            return
        except BufferError as e:
            log.warning("producer queue full (%s); aborting and retrying the batch", e)
            self._abort(firsts)
            return
        except Poisoned as p:
            self._poisoned(p)
            self._abort(firsts)
            return
        self._committed(started)

    def _transact(self, msgs: list[Message]) -> None:
        """Decide the batch in one transaction, with the consumed offsets, and commit it."""
        consumer = self.consumer
        assert consumer is not None
        self.handler.producer = self.txn.begin()
        self.handler.prefetch(msgs)
        offsets: dict[int, int] = {}
        for msg in msgs:
            if msg.error() is not None:
                log.warning("consumer error: %s", msg.error())
                continue
            partition, offset = position_of(msg)
            offsets[partition] = offset + 1
            self.handler.handle_guarded(msg)
        self.handler.flush_changelogs()
        positions = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        self.txn.commit(positions, consumer.consumer_group_metadata())

    def _committed(self, started: float) -> None:
        changes = self.overlay.reset()
        if changes:
            forget = {key: self.window.forget_after(decided)
                      for key, (_, decided) in changes.outcomes.items()}
            self.store.commit(changes, forget)
        self._checkpoint()
        # Long-lived objects (cached balances, routes) would be walked by every full
        # collection; frozen, a collection sees only what the last batch made.
        gc.freeze()
        self.stats.batches += 1
        seconds = time.monotonic() - started
        self.stats.last_batch_ms = seconds * 1000
        self.batch_latency.observe(seconds)

    def _failed(self, e: KafkaException, firsts: dict[int, int]) -> None:
        err = e.args[0]
        if is_fenced(e):  # another instance took this transactional id over
            self._discard_batch()
            raise InfrastructureError(f"processor fenced: {err.str()}") from e
        if err.fatal():
            self._unknown(f"fatal producer error ({err.str()})")
            return
        log.warning("transaction failed (%s); aborting and retrying the batch", err.str())
        self._abort(firsts)

    def _abort(self, firsts: dict[int, int]) -> None:
        """The batch did not commit: abort it and consume it again."""
        self._discard_batch()
        self.stats.aborts += 1
        if self.txn.abort():
            self.group.rewind(firsts)
        else:
            self.group.resync()

    def _unknown(self, what: str) -> None:
        """Whether the batch committed is not known: a new producer settles it, then the
        state and positions come from the log, so no batch is ever decided twice."""
        self._discard_batch()
        self.txn.replace(what)
        self.group.resync()

    def _poisoned(self, p: Poisoned) -> None:
        self.handler.poisoned[p.position] = p.error
        log.error(
            "record %s[%d]@%d cannot be processed (%s: %s); "
            "retrying the batch without it and dead-lettering it",
            self.topic,
            *p.position,
            type(p.error).__name__,
            str(p.error)[:300],
        )

    def _discard_batch(self) -> None:
        self._pending = None  # an assignment in doubt: its ends are not ours to trust
        self.overlay.reset()
        self.handler.discard()

    # --- store upkeep between batches ----------------------------------------------

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_prune:
            self._next_prune = now + self.tuning.prune_every_s
            self.store.prune(int(time.time() * 1000), self.tuning.prune_limit)
        if now >= self._next_checkpoint and self.group.owned and self._pending is None:
            self._next_checkpoint = now + self.tuning.checkpoint_every_s
            # The changelogs' ends now: a checkpoint only once a later batch commits under
            # the same assignment (a commit proves the group did not move the partitions
            # meanwhile; a paused instance's ends could include its successor's writes).
            self._pending = (self.group.epoch, self.group.reader.ends(sorted(self.group.owned)))

    def _checkpoint(self) -> None:
        """After a commit: the pending ends, taken under this same assignment, hold."""
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == self.group.epoch:
            for partition, offsets in pending[1].items():
                self.store.checkpoint(partition, offsets)


def state_file(settings: Settings, instance_id: str) -> Any:
    """The instance's state file: one per topic prefix and instance id."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in instance_id)
    return settings.state_path / settings.topic_prefix / f"{safe}.sqlite"
