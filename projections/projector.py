"""The live projector: <prefix>.accounts and <prefix>.events into a store, batch by batch.

- Projectors of a shared store (Postgres) form one consumer group per store and share
  the partitions; a DuckDB store has one writing process, whose projector assigns
  itself every partition.

- The store's projection_positions is the source of truth, not the group's committed
  offsets (none are committed): on assignment each partition resumes at its stored
  next offset.
- Each batch's rows and positions commit in one store transaction. The position stored
  is the source's position after the batch (offsets have holes; never last+1).
- Positions move only from the value the batch started at (compare-and-set), so a
  projector that lost its partitions (a zombie) or raced a replay's swap cannot write
  a batch twice: its transaction fails with PositionConflict and it re-reads positions.
- Dead letters are produced and flushed before the batch that skips them commits.

The journal and the dead letters are ports (projections.ports): `ledger.wiring.build_projector`
makes a projector on Kafka or on the in-memory adapters.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ledger.errors import LedgerError, StoreError, StoreUnavailableError, UsageError
from ledger.health import LIFECYCLE, Heartbeat, LatencyHistogram
from ledger.settings import Settings
from ledger.wire import Codec
from projections.identity import claim_journal
from projections.ingest import Ingest
from projections.log import check_log_start
from projections.ports import ConsumedRecord, ProjectorPorts
from projections.rows import account_table, balance_deltas
from projections.store import META_AS_OF, Batch, PositionConflict, PositionKey, ProjectionStore

if TYPE_CHECKING:  # DuckDB, which a snapshot writes, is imported only where one is taken
    from projections.snapshot_requests import Snapshotter

LOG = logging.getLogger("ledger.projector")


@dataclass
class ProjectorStats:
    batches: int = 0
    records: int = 0
    events: int = 0
    dead_letters: int = 0
    conflicts: int = 0
    last_batch_ms: float = 0.0
    lag: dict[PositionKey, int] = field(default_factory=dict)  # records behind the end


def group_id(settings: Settings, store: ProjectionStore) -> str:
    """One consumer group per (prefix, store): projectors of one store share partitions."""
    return f"{settings.topic_prefix}.projector.{store.store_id()}"


class Projector:
    """Runs until stopped, or until caught up with the end offsets taken at start."""

    def __init__(self, settings: Settings, store: ProjectionStore, ports: ProjectorPorts, *,
                 batch_records: int | None = None, batch_ms: int | None = None,
                 until_caught_up: bool = False, codec: Codec | None = None,
                 snapshots: Snapshotter | None = None) -> None:
        """`batch_records` and `batch_ms`: the settings' tuning unless given. Made by
        ledger.wiring.build_projector; the projector closes the ports when it stops."""
        if META_AS_OF in store.meta():
            raise UsageError(f"store {store.url} holds a `replay --as-of` snapshot; projecting "
                             "onto it would mix times. Run `ledger replay` without --as-of first")
        self.settings = settings
        self.store = store
        self.tuning = settings.tuning
        self.batch_records = batch_records or self.tuning.project_batch_records
        self.batch_s = (batch_ms or self.tuning.project_batch_ms) / 1000
        self.until_caught_up = until_caught_up
        self.topics = [settings.topic("accounts"), settings.topic("events")]
        self.ingest = Ingest(settings, codec)
        self.source = ports.journal
        self.deadletters = ports.deadletters
        self.snapshots = snapshots  # periodic and requested snapshots, between batches
        self.stats = ProjectorStats()
        self.expected: dict[PositionKey, int] = {}  # stored next_offset of owned partitions
        self.ends: dict[PositionKey, int] = {}
        self._fatal: LedgerError | None = None
        self._stopping = False
        # For the metrics server: loop liveness, batch latencies, readiness.
        self.heartbeat = Heartbeat(stall_after_s=self.tuning.stall_after_s)
        self.batch_latency = LatencyHistogram()
        self.assigned = False  # an assignment (maybe empty) taken and not revoked since
        self.store_problem = ""  # why the store failed its last batch or ping; '' if it did not
        self.metrics_url = "off"
        self._next_upkeep = 0.0
        self._aborting = False

    def stop(self) -> None:
        """Ask the loop to finish its batch and return (signal handlers call this)."""
        self._stopping = True

    def run(self) -> ProjectorStats:
        LIFECYCLE.info("project started: instance %s, brokers %s, topics %s, store %s, "
                       "group %s, metrics %s", f"{socket.gethostname()}:{os.getpid()}",
                       self.settings.bootstrap, " ".join(self.topics), self.store.url,
                       group_id(self.settings, self.store), self.metrics_url)
        self.heartbeat.beat()
        try:
            claim_journal(self.store, self.source.journal())
            if self.until_caught_up:
                self.ends = {k: hi for k, (_, hi) in self.source.watermarks(self.topics).items()}
            self._start()
            self._loop()
            self._flush()
            if self.snapshots is not None:  # caught up: a snapshot in progress finishes
                self.snapshots.close(cancel=self._stopping)
        except BaseException:
            # Whatever is pending was read past an error or an interrupt: it must not commit,
            # not even from the revoke that closing the consumer triggers.
            self._aborting = True
            self.ingest.reset()
            raise
        finally:
            self.heartbeat.stop()
            if self.snapshots is not None:
                self.snapshots.close()
            self._close()
            s = self.stats
            LIFECYCLE.info("project stopped: %d events, %d records, %d dead-lettered in %d "
                           "batches", s.events, s.records, s.dead_letters, s.batches)
        return self.stats

    def _start(self) -> None:
        """Join the store's group if several processes may write it; else take everything.

        A DuckDB file has one writing process, so its projector needs no group: it assigns
        itself every partition and never waits for a dead predecessor's session to expire.
        """
        if self.store.shared:
            self.source.subscribe(self.topics, self._on_assign, self._on_revoke, self._on_lost)
            return
        self._on_assign(list(self.source.watermarks(self.topics)))
        if self._fatal is not None:
            raise self._fatal

    def _loop(self) -> None:
        started = time.monotonic()
        while not self._stopping:
            self.heartbeat.beat()
            self._upkeep()
            if self.snapshots is not None:
                self.snapshots.tick()
            left = (self.batch_s - (time.monotonic() - started) if len(self.ingest)
                    else self.tuning.project_idle_poll_s)
            want = min(self.tuning.project_consume_max, self.batch_records - len(self.ingest))
            msgs = self._consume(max(want, 1), max(left, 0.0))
            if msgs and not len(self.ingest):
                started = time.monotonic()
            self.ingest.add(msgs)
            full = len(self.ingest) >= self.batch_records
            if full or time.monotonic() - started >= self.batch_s:
                self._flush()
                started = time.monotonic()
            if self.until_caught_up and not len(self.ingest) and self._caught_up():
                return

    def _consume(self, n: int, timeout: float) -> list[ConsumedRecord]:
        msgs = self.source.consume(n, timeout)
        if self._fatal is not None:
            raise self._fatal
        return msgs

    def _flush(self) -> None:
        """Commit the pending batch: dead letters first, then rows and positions."""
        if not len(self.ingest) or not self.expected:
            return
        ing = self.ingest
        stray = ing.partitions() - self.expected.keys()
        if stray:  # records of partitions this projector does not own (any more)
            LOG.warning("batch dropped: it holds records of %s, not owned", sorted(stray))
            ing.reset()
            self._resync()
            return
        started = time.monotonic()
        audit = ing.audit()
        moved = self._moved_positions()
        batch = Batch(
            audit=audit if audit.num_rows else None,
            deltas=balance_deltas(audit) if audit.num_rows else None,
            accounts=account_table(ing.accounts.values()) if ing.accounts else None,
            positions={k: (self.expected[k], new) for k, new in moved.items()})
        self.deadletters.send(ing.bad)
        try:
            self._apply(batch)
        except PositionConflict as e:
            LOG.warning("batch dropped: %s; resuming from the stored positions", e)
            self.stats.conflicts += 1
            ing.reset()
            self._resync()
            return
        self.expected.update(moved)
        seconds = time.monotonic() - started
        self.stats.last_batch_ms = seconds * 1000
        self.batch_latency.observe(seconds)
        self._count(len(ing), ing.event_count, len(ing.bad))
        ing.reset()
        self._measure_lag()

    def _measure_lag(self) -> None:
        """On the projector's own thread (metrics scrapes must not touch the source)."""
        ends = self.source.cached_ends(self.expected)
        self.stats.lag = {k: max(0, ends[k] - pos) for k, pos in self.expected.items()
                          if k in ends}

    def _upkeep(self) -> None:
        """Every few seconds: lag for the metrics and, when no batch is pending (a batch
        tells of the store itself), a ping that tells readiness whether the store answers."""
        now = time.monotonic()
        if now < self._next_upkeep:
            return
        self._next_upkeep = now + self.tuning.project_upkeep_s
        self._measure_lag()
        if len(self.ingest):
            return
        try:
            self.store.meta()
        except StoreError as e:
            self.store_problem = str(e)
            if isinstance(e, StoreUnavailableError):
                with contextlib.suppress(StoreError):
                    self.store.reconnect()
            return
        self.store_problem = ""

    def _apply(self, batch: Batch) -> None:
        """Apply a batch, waiting out a store outage with backoff instead of dying.

        The batch stays in memory and commits once the store is back; its positions are
        compare-and-set, so a batch that did commit before the connection broke fails
        with PositionConflict rather than being written twice.
        """
        first, most = self.tuning.project_retry_first_s, self.tuning.project_retry_max_s
        delay = first
        while True:
            try:
                self.store.apply_batch(batch)
                self.store_problem = ""
                if delay > first:
                    LOG.warning("store %s is back; batch committed", self.store.url)
                return
            except StoreUnavailableError as e:
                self.store_problem = str(e)
                if self._stopping:
                    raise
                self.heartbeat.beat()  # waiting out an outage on purpose: alive, not ready
                LOG.warning("store unavailable (%s); retrying in %.1fs", e, delay)
                time.sleep(delay)
                delay = min(delay * 2, most)
                with contextlib.suppress(StoreUnavailableError):
                    self.store.reconnect()

    def _count(self, records: int, events: int, bad: int) -> None:
        s = self.stats
        s.batches, s.records, s.events, s.dead_letters = (
            s.batches + 1, s.records + records, s.events + events, s.dead_letters + bad)
        LOG.info("batch %d: %d records, %d events, %d dead-lettered", s.batches, records,
                 events, bad)

    def _moved_positions(self) -> dict[PositionKey, int]:
        return {k: pos for k, pos in self.source.positions(self.expected).items()
                if pos != self.expected[k]}

    def _resync(self) -> None:
        stored = self.store.claim_positions(self.expected)
        self.source.seek(stored)
        self.expected.update(stored)

    def _caught_up(self) -> bool:
        if not self.expected:
            return False
        known = self.source.positions(self.expected)
        return all(known.get(k, pos) >= self.ends.get(k, 0) for k, pos in self.expected.items())

    # -- rebalancing: callbacks run inside consume() ----------------------------------------
    def _on_assign(self, keys: list[PositionKey]) -> None:
        try:
            stored = self.store.claim_positions(keys)
            lows = self.source.watermarks({t for t, _ in keys})
            for key in keys:
                check_log_start(key, stored[key], lows[key][0])
        except LedgerError as e:
            self._fatal = e
            self.source.assign({})
            return
        self.source.assign({k: stored[k] for k in keys})
        self.expected = {**self.expected, **{k: stored[k] for k in keys}}
        self.assigned = True
        LIFECYCLE.info("projector assigned %s", _describe(keys))

    def _on_revoke(self, keys: list[PositionKey]) -> None:
        if self._fatal is None and not self._aborting:
            try:
                self._flush()
            except LedgerError as e:
                self._fatal = e
        self._forget(keys)
        LOG.info("revoked %s", _describe(keys))

    def _on_lost(self, keys: list[PositionKey]) -> None:
        self.ingest.reset()  # another projector owns them now: never write their rows
        self._forget(keys)
        LOG.warning("lost %s", _describe(keys))

    def _forget(self, keys: list[PositionKey]) -> None:
        self.assigned = False
        for key in keys:
            self.expected.pop(key, None)

    def _close(self) -> None:
        self.source.close()
        self.deadletters.close()


def _describe(keys: list[PositionKey]) -> str:
    by_topic: dict[str, list[int]] = {}
    for t, p in sorted(keys):
        by_topic.setdefault(t, []).append(p)
    return " ".join(f"{t}{ps}" for t, ps in by_topic.items()) or "nothing"


__all__ = ["Projector", "ProjectorStats", "group_id"]
