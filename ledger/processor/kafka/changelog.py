"""KafkaChangelogReader: a commands partition's changelog tails, read once they are stable.

The changelogs of partition p (points.balances, points.results, points.guards) are written
only by the owner of points.commands partition p, inside its transactions. Before a new
owner reads them it waits until no transaction is open on each changelog partition (last
stable offset equal to the high watermark: the previous owner's markers are all written).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from ledger.errors import InfrastructureError
from ledger.kafka import make_admin, make_consumer
from ledger.processor.ports import CHANGELOGS
from ledger.settings import Settings

log = logging.getLogger("ledger.processor")

CHUNK = 5000
LATEST: Any = OffsetSpec.latest()  # type: ignore[no-untyped-call]
EARLIEST: Any = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
# A transaction left open by a paused or dead owner ends within the transaction timeout.
STABLE_WAIT_S = 90.0


class KafkaChangelogReader:
    """Offsets through an admin client; records through a short-lived assigned consumer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._admin: AdminClient | None = None

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = make_admin(self.settings)
        return self._admin

    def stable_ends(self, partition: int) -> dict[str, tuple[int, int]]:
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

    def ends(self, partitions: list[int]) -> dict[int, dict[str, int]]:
        """The high watermarks: the checkpoint of a store that took in every batch
        committed so far (only the partition's owner writes them)."""
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

    def read(self, changelog: str, partition: int, start: int,
             end: int) -> Iterator[tuple[list[bytes | None], int]]:
        """Committed records of one partition from `start` up to `end` (a stable end)."""
        consumer = make_consumer(self.settings, None, **{"fetch.wait.max.ms": 20,
                                                         "enable.partition.eof": True})
        topic = self.settings.topic(changelog)
        try:
            consumer.assign([TopicPartition(topic, partition, start)])
            chunk: list[bytes | None] = []
            after = start
            while True:
                for msg in consumer.consume(CHUNK, timeout=0.2):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            yield chunk, after if chunk else end
                            return
                        continue
                    offset = msg.offset() or 0
                    if offset >= end:
                        yield chunk, after if chunk else end
                        return
                    chunk.append(msg.value())
                    after = offset + 1
                if len(chunk) >= CHUNK:
                    yield chunk, after
                    chunk = []
        finally:
            consumer.close()

    def close(self) -> None:
        self._admin = None

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
