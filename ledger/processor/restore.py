"""A partition's state restored from its changelogs' tails, after the last owner's commit is stable.

The changelogs of partition p (points.balances, points.results, points.guards) are written
only by the owner of points.commands partition p, inside its transactions. A new owner
first fetches the group's stable committed offsets (KIP-447: the consumer's
require.stable.offsets waits for a pending transactional offset commit), then waits
until no transaction is open on each changelog partition (last stable offset equal to
the high watermark: the previous owner's markers are all written), and only then reads
each changelog from the store's checkpoint to that end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from ledger.domain import DedupWindow
from ledger.errors import CodecError, InfrastructureError
from ledger.kafka import make_admin, make_consumer
from ledger.processor.state import CreditMark
from ledger.processor.store import StateStore
from ledger.records import Outcome, snapshot_from_record
from ledger.settings import Settings
from ledger.wire import Codec

log = logging.getLogger("ledger.processor")

# Changelog -> schema of its values.
CHANGELOGS = {"balances": "balance", "results": "result", "guards": "guard"}
CHUNK = 5000
LATEST: Any = OffsetSpec.latest()  # type: ignore[no-untyped-call]
EARLIEST: Any = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
# A transaction left open by a paused or dead owner ends within the transaction timeout.
STABLE_WAIT_S = 90.0


@dataclass
class Restored:
    records: int = 0
    millis: float = 0.0


class ChangelogReader:
    """Reads changelog tails into the store; finds the changelogs' ends for checkpoints."""

    def __init__(self, settings: Settings, codec: Codec, window: DedupWindow) -> None:
        self.settings, self.codec, self.window = settings, codec, window
        self._admin: AdminClient | None = None

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = make_admin(self.settings)
        return self._admin

    def restore(self, store: StateStore, partition: int) -> Restored:
        """Bring the store's state of `partition` up to its changelogs' stable ends."""
        started, done = time.monotonic(), Restored()
        store.forget_cache(partition)
        ends = self._stable_ends(partition)
        checkpoints = store.checkpoints(partition)
        if any(checkpoints.get(n, 0) > ends[n][1] for n in CHANGELOGS):
            # The store is ahead of the log: the topics were recreated under the same names.
            log.warning("partition %d: state ahead of its changelogs; restoring anew", partition)
            store.reset(partition)
            checkpoints = {}
        for name, (low, end) in ends.items():
            start = max(checkpoints.get(name, 0), low)
            if start < end:
                done.records += self._read_into(store, name, partition, start, end)
        done.millis = (time.monotonic() - started) * 1000
        log.info("partition %d restored: %d changelog records read in %.0f ms",
                 partition, done.records, done.millis)
        return done

    def ends(self, partitions: list[int]) -> dict[int, dict[str, int]]:
        """The changelogs' high watermarks: the checkpoint of a store that took in every
        batch committed so far (only the partition's owner writes them)."""
        specs = {
            TopicPartition(self.settings.topic(n), p): LATEST
            for n in CHANGELOGS for p in partitions
        }
        found = self._offsets(specs, IsolationLevel.READ_UNCOMMITTED)
        out: dict[int, dict[str, int]] = {p: {} for p in partitions}
        names = {self.settings.topic(n): n for n in CHANGELOGS}
        for tp, offset in found.items():
            out[tp.partition][names[tp.topic]] = offset
        return out

    def close(self) -> None:
        self._admin = None

    # --- helpers -------------------------------------------------------------------

    def _stable_ends(self, partition: int) -> dict[str, tuple[int, int]]:
        """(low, end) of each changelog's partition once no transaction is open on any,
        asked for all changelogs in one request per kind of offset."""
        tps = {TopicPartition(self.settings.topic(n), partition): n for n in CHANGELOGS}
        deadline, said = time.monotonic() + STABLE_WAIT_S, False
        while True:
            stable = self._offsets(dict.fromkeys(tps, LATEST), IsolationLevel.READ_COMMITTED)
            high = self._offsets(dict.fromkeys(tps, LATEST), IsolationLevel.READ_UNCOMMITTED)
            open_ = [tp for tp in tps if stable[tp] < high[tp]]
            if not open_:
                low = self._offsets(dict.fromkeys(tps, EARLIEST), IsolationLevel.READ_COMMITTED)
                return {name: (low[tp], high[tp]) for tp, name in tps.items()}
            tp = open_[0]
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"{tp.topic}[{partition}] still has an open transaction after "
                    f"{STABLE_WAIT_S:g}s (stable offset {stable[tp]}, end {high[tp]})"
                )
            if not said:
                log.info("%s[%d]: waiting for an open transaction to end (stable %d, end %d)",
                         tp.topic, partition, stable[tp], high[tp])
                said = True
            time.sleep(0.05)

    def _offsets(
        self, specs: dict[TopicPartition, Any], isolation: IsolationLevel
    ) -> dict[TopicPartition, int]:
        deadline = time.monotonic() + 30
        while True:
            try:
                futures = self.admin.list_offsets(
                    specs, isolation_level=isolation, request_timeout=10
                )
                return {tp: int(f.result().offset) for tp, f in futures.items()}
            except KafkaException as e:
                # Leaders move under broker failures (FENCED_LEADER_EPOCH, no leader yet):
                # a fresh admin client with fresh metadata, until the deadline.
                self._admin = None
                if time.monotonic() > deadline:
                    raise InfrastructureError(f"cannot list changelog offsets: {e}") from e
                time.sleep(0.5)

    def _read_into(self, store: StateStore, name: str, partition: int, start: int,
                   end: int) -> int:
        read = 0
        for chunk in _chunks(self.settings, self.settings.topic(name), partition, start, end):
            values = [m.value() for m in chunk]
            next_offset = (chunk[-1].offset() or 0) + 1 if chunk else end
            self._apply(store, name, partition, values, next_offset)
            read += len(chunk)
        store.checkpoint(partition, {name: end})
        return read

    def _apply(self, store: StateStore, name: str, partition: int,
               values: list[bytes | None], next_offset: int) -> None:
        records = [r for r in (self._decode(name, v) for v in values) if r]
        if name == "balances":
            store.restore(partition, name, next_offset,
                          balances=[snapshot_from_record(r) for r in records])
        elif name == "results":
            store.restore(partition, name, next_offset, outcomes=self._outcomes(records))
        else:
            reversed_ids = [(r["event_id"], r["command_id"] or "") for r in records
                            if r["kind"] == "EVENT_REVERSED"]
            marks = [(r["source_partition"], CreditMark(r["source_offset"],
                                                         frozenset(r["accounts"])))
                     for r in records if r["kind"] == "CREDITS_APPLIED"]
            store.restore(partition, name, next_offset, reversed_ids=reversed_ids, marks=marks)

    def _outcomes(self, records: list[dict[str, Any]]) -> list[tuple[Outcome, int]]:
        now = int(time.time() * 1000)
        out = []
        for rec in records:
            if rec["status"] == "REJECTED" and not rec["payload_fingerprint"]:
                continue  # a refusal (misrouted, expired, unreadable), not a decision
            forget_at = self.window.forget_after(rec["decided_at"])
            if forget_at >= now:
                out.append((Outcome.from_record(rec), forget_at))
        return out

    def _decode(self, name: str, value: bytes | None) -> dict[str, Any]:
        if value is None:
            return {}
        try:
            return self.codec.decode_as(CHANGELOGS[name], value)
        except CodecError as e:
            # The processor wrote these itself; a bad one is a bug to see, not a reason to stop.
            log.error("undecodable %s record in a changelog: %s", name, e)
            return {}



def _chunks(settings: Settings, topic: str, partition: int, start: int,
            end: int) -> Iterator[list[Message]]:
    """Committed records of one partition from `start` up to `end` (a stable end)."""
    consumer = make_consumer(settings, None, **{"fetch.wait.max.ms": 20,
                                                "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        chunk: list[Message] = []
        while True:
            for msg in consumer.consume(CHUNK, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        yield chunk
                        return
                    continue
                if (msg.offset() or 0) >= end:
                    yield chunk
                    return
                chunk.append(msg)
            if len(chunk) >= CHUNK:
                yield chunk
                chunk = []
    finally:
        consumer.close()
