"""KafkaChangelogReader: a commands partition's changelog tails, read once they are stable.

The changelogs of partition p (points.balances, points.results, points.guards) are written
only by the owner of points.commands partition p, inside its transactions. Before a new
owner reads them it waits until no transaction is open on each changelog partition (last
stable offset equal to the high watermark: the previous owner's markers are all written).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from confluent_kafka import IsolationLevel, TopicPartition

from ledger.errors import InfrastructureError
from ledger.kafka import make_consumer
from ledger.processor.kafka.offsets import EARLIEST, LATEST, StableOffsets
from ledger.processor.ports import CHANGELOGS
from ledger.settings import Settings

log = logging.getLogger("ledger.processor")

CHUNK = 5000
# A transaction left open by a paused or dead owner ends within the transaction timeout.
STABLE_WAIT_S = 90.0


class KafkaChangelogReader:
    """Offsets through an admin client; records through a short-lived assigned consumer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._offsets = StableOffsets(settings)

    def stable_ends(self, partition: int) -> dict[str, tuple[int, int]]:
        """(low, end) of each changelog's partition once no transaction is open on any,
        asked for all changelogs in one request per kind of offset."""
        tps = {TopicPartition(self.settings.topic(n), partition): n for n in CHANGELOGS}
        deadline, said = time.monotonic() + STABLE_WAIT_S, False
        while True:
            stable = self._list(tps, LATEST, IsolationLevel.READ_COMMITTED)
            high = self._list(tps, LATEST, IsolationLevel.READ_UNCOMMITTED)
            open_ = [tp for tp in tps if stable[tp] < high[tp]]
            if not open_:
                low = self._list(tps, EARLIEST, IsolationLevel.READ_COMMITTED)
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

    def ends(self, partitions: list[int]) -> dict[int, dict[str, int]]:
        """The high watermarks: the checkpoint of a store that took in every batch
        committed so far (only the partition's owner writes them)."""
        specs = {
            TopicPartition(self.settings.topic(n), p): LATEST
            for n in CHANGELOGS for p in partitions
        }
        found = self._offsets.offsets(specs, IsolationLevel.READ_UNCOMMITTED)
        out: dict[int, dict[str, int]] = {p: {} for p in partitions}
        names = {self.settings.topic(n): n for n in CHANGELOGS}
        for tp, offset in found.items():
            out[tp.partition][names[tp.topic]] = offset
        return out

    def read(self, changelog: str, partition: int, start: int,
             end: int) -> Iterator[tuple[list[bytes | None], int]]:
        """Committed records of one partition from `start` up to `end` (a stable end).

        Done when the consumer's position reaches `end`, never at an end-of-partition
        alone: a new leader's high watermark can lag the old leader's for a moment after a
        broker failure, and stopping there would let a restore checkpoint past records it
        never read. No progress for tuning.read_stall_s: InfrastructureError."""
        consumer = make_consumer(self.settings, None, **{"fetch.wait.max.ms": 20})
        tp = TopicPartition(self.settings.topic(changelog), partition, start)
        stall_s = self.settings.tuning.read_stall_s
        try:
            consumer.assign([tp])
            chunk: list[bytes | None] = []
            after, moved = start, time.monotonic()
            while after < end:
                for msg in consumer.consume(CHUNK, timeout=0.2):
                    offset = msg.offset() or 0
                    if msg.error() is None and offset < end:
                        chunk.append(msg.value())
                position = consumer.position([tp])[0].offset
                if position > after:  # past records and transaction markers alike
                    after, moved = min(position, end), time.monotonic()
                elif time.monotonic() - moved > stall_s:
                    raise InfrastructureError(
                        f"{tp.topic}[{partition}]: restore stuck at offset {after} of {end} "
                        f"for {stall_s:g}s")
                if len(chunk) >= CHUNK and after < end:
                    yield chunk, after
                    chunk = []
            yield chunk, after  # possibly none: the tail may be transaction markers only
        finally:
            consumer.close()

    def close(self) -> None:
        self._offsets.close()

    def _list(self, tps: Iterable[TopicPartition], spec: object,
              isolation: IsolationLevel) -> dict[TopicPartition, int]:
        return self._offsets.offsets(dict.fromkeys(tps, spec), isolation)
