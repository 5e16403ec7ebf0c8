"""The command processor's loop: consume a batch, decide it in one transaction, commit or recover.

A consumer group on points.commands; each instance owns the accounts that hash to its
partitions. Per batch, inside one transaction: decide every command, write journal
events, account states, balance snapshots, guards, results and routed credits, and send
the consumed offsets to the transaction. All of it commits together or not at all.

The pieces: ports (the command source, transactional sink, changelog reader, journal
lookup and accounts table it is given), group (partitions owned and restored), handler
(one record decided), state (the batch's overlay), store (the on-disk state), restore
(changelog tails after a stable commit).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.credits import CreditSigner
from ledger.domain import DedupWindow
from ledger.errors import InfrastructureError
from ledger.health import LIFECYCLE, Heartbeat, LatencyHistogram
from ledger.processor.group import GroupMember
from ledger.processor.handler import CommandHandler
from ledger.processor.poison import Poisoned
from ledger.processor.ports import TXN_TIMEOUT_S, Failure, ProcessorPorts, Record, SourceFatal
from ledger.processor.restore import Restorer
from ledger.processor.routing import Router
from ledger.processor.state import Overlay, ProcessorStats
from ledger.processor.store import StateStore
from ledger.settings import Settings
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


class CommandProcessor:
    """Built by ledger.wiring from a store and a set of ports (Kafka's, or in-memory ones)."""

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        instance_id: str,
        signer: CreditSigner,
        ports: ProcessorPorts,
        store: StateStore,
        stats: ProcessorStats,
        tuning: ProcessorTuning = ProcessorTuning(),
    ) -> None:
        self.settings, self.codec, self.instance_id = settings, codec, instance_id
        self.tuning, self.ports, self.store, self.stats = tuning, ports, store, stats
        self.source, self.sink = ports.source, ports.sink
        self.window = window = DedupWindow(int(settings.dedup_window_s * 1000))
        self.router = Router()
        self.group = GroupMember(instance_id, self.source, store,
                                 Restorer(ports.changelogs, codec, window), stats)
        self.overlay = Overlay(store, self.group.owns, ports.accounts.known,
                               self.router.account)
        self.handler = CommandHandler(settings, codec, self.overlay, stats, ports.journal,
                                      self.router, signer, window, self.sink.failure)
        self.topic = self.source.topic
        self._stop = threading.Event()
        self.heartbeat = Heartbeat()  # /healthz: the loop runs and goes round
        self.batch_latency = LatencyHistogram()
        self.lag: dict[int, int] = {}  # records behind the end per owned partition (metrics)
        self.metrics_server: Any = None
        self._next_checkpoint = self._next_prune = 0.0
        self._pending: tuple[int, dict[int, dict[str, int]]] | None = None

    # --- lifecycle -----------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """start(), then turns of the loop until stop(), then close()."""
        self.start()
        if on_ready:
            on_ready()
        try:
            while not self._stop.is_set():
                self.turn()
        finally:
            self.close()

    def start(self) -> None:
        """Check the topics, open the store, start transacting, join the group."""
        self.router.partitions = self.source.open()
        self.store.open()
        self.sink.start()
        self.ports.accounts.start()
        self.group.subscribe()
        metrics = self.metrics_server.url if self.metrics_server is not None else "off"
        LIFECYCLE.info("serve started: instance %s, brokers %s, topics %s.*, state %s, "
                       "metrics %s", self.instance_id, self.settings.bootstrap,
                       self.settings.topic_prefix, self.store.path, metrics)
        self.heartbeat.beat()

    def close(self) -> None:
        self.heartbeat.stop()
        LIFECYCLE.info("serve stopped: instance %s, %s", self.instance_id, self.stats)
        self.source.close()
        self.ports.accounts.stop()
        self.ports.journal.close()
        self.ports.changelogs.close()
        self.store.close()
        if self.metrics_server is not None:
            self.metrics_server.close()

    def turn(self) -> None:
        """One turn of the loop: consume a batch, decide it in a transaction, upkeep."""
        self.heartbeat.beat()
        epoch = self.group.epoch
        try:
            msgs = self.source.consume(self.tuning.max_batch, self.tuning.batch_timeout_s)
        except SourceFatal as fatal:  # before any of the batch is handled: nothing to undo
            self.group.rejoin(str(fatal))
            return
        if self.group.epoch != epoch and msgs:
            # Partitions moved while the batch was fetched: some of it may predate its
            # partition's new assignment. Decide none of it; resume from the group.
            self.stats.dropped_unowned += len(msgs)
            self.group.resync()
            return
        self.lag = self.source.lag(sorted(self.group.owned))
        if msgs:
            self._process_batch(msgs)
        self._housekeeping()

    # --- one batch, one transaction -------------------------------------------

    def _process_batch(self, msgs: list[Record]) -> None:
        started = time.monotonic()
        owns = self.group.owns
        owned = [m for m in msgs if owns(m.partition() or 0)]
        self.stats.dropped_unowned += len(msgs) - len(owned)
        firsts: dict[int, int] = {}  # where to rewind to if the transaction aborts
        for msg in owned:
            firsts.setdefault(msg.partition() or 0, msg.offset() or 0)
        if not firsts:
            return
        try:
            self._transact(owned)
        except Poisoned as p:
            self._poisoned(p)
            self._abort(firsts)
            return
        except Exception as e:
            kind = self.sink.failure(e)
            if kind is None:
                raise
            self._failed(kind, e, firsts)
            return
        self._committed(started)

    def _transact(self, msgs: list[Record]) -> None:
        """Decide the batch in one transaction, with the consumed offsets, and commit it."""
        handler = self.handler
        self.ports.accounts.new_batch()
        handler.producer = self.sink.begin()
        handler.prefetch(msgs)
        offsets: dict[int, int] = {}
        for msg in msgs:
            offset = msg.offset() or 0
            offsets[msg.partition() or 0] = offset + 1
            handler.handle_guarded(msg)
        handler.flush_changelogs()
        self.sink.commit(offsets, self.source.group())

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

    def _failed(self, kind: Failure, e: Exception, firsts: dict[int, int]) -> None:
        if kind is Failure.FENCED:  # another instance took this transactional id over
            self._discard_batch()
            raise InfrastructureError(f"processor fenced: {_detail(e)}") from e
        if kind is Failure.COMMIT_UNKNOWN:
            self._unknown(_detail(e))
        elif kind is Failure.FATAL:
            self._unknown(f"fatal producer error ({_detail(e)})")
        else:
            log.warning("transaction failed (%s); aborting and retrying the batch", _detail(e))
            self._abort(firsts)

    def _abort(self, firsts: dict[int, int]) -> None:
        """The batch did not commit: abort it and consume it again."""
        self._discard_batch()
        self.stats.aborts += 1
        if self.sink.abort():
            self.group.rewind(firsts)
        else:
            self.group.resync()

    def _unknown(self, what: str) -> None:
        """Whether the batch committed is not known: a new producer settles it, then the
        state and positions come from the log, so no batch is ever decided twice."""
        self._discard_batch()
        self.sink.replace(what)
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
            self._pending = (self.group.epoch, self.ports.changelogs.ends(sorted(self.group.owned)))

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


def _detail(e: BaseException) -> str:
    """What an error says (a KafkaException's KafkaError, a buffer error's message)."""
    first = e.args[0] if e.args else e
    return str(first.str()) if hasattr(first, "str") else str(first)
