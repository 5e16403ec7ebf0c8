"""KafkaAccountsTable: every opened account, consumed continuously from points.accounts.

Like a GlobalKTable: every instance reads the whole compacted topic, so the owner of a
user can check that a room owned elsewhere exists. An account the table does not have is
unknown only once the table has read as far as the topic went when the batch began: a
client that saw a room's open accepted and then joins it is never told the room is
unknown. `start` returns once the table reached the topic's stable ends at start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from ledger.errors import CodecError, InfrastructureError
from ledger.kafka import make_consumer, partition_for, positions
from ledger.processor.kafka.offsets import StableOffsets, readable_end
from ledger.processor.ports import NotReadableYet
from ledger.settings import Settings
from ledger.wire import Codec

log = logging.getLogger("ledger.processor")
RETRY_S = 1.0  # between attempts after the table's consumer failed


class KafkaAccountsTable:
    """Every opened account, consumed continuously from the compacted points.accounts."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings, self.codec = settings, codec
        self.topic = settings.topic("accounts")
        self.accounts: dict[str, str] = {}  # account -> status
        self._next: dict[int, int] = {}  # partition -> next offset to read (kept on retries)
        self._ends: dict[int, int] | None = None  # the stable ends to load up to
        self._at: dict[tuple[str, int], int] = {}  # positions at the last look
        self._partitions = settings.partitions  # the topic's, once read
        self._targets: dict[int, int] = {}  # partition -> end to read to before a miss
        self._offsets = StableOffsets(settings)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._progress_at = time.monotonic()
        self._error = ""
        self._thread = threading.Thread(target=self._run, name="accounts-table", daemon=True)

    def new_batch(self) -> None:
        """Commands consumed from now on may name accounts opened up to now."""
        self._targets.clear()

    def known(self, account: str) -> bool:
        """Open in the table, read at least up to where the account's partition ended
        when first asked in this batch (its high watermark: an open's transaction may
        still be settling); NotReadableYet if the table cannot get there in time."""
        if self.accounts.get(account) == "OPEN":
            return True
        partition = partition_for(account.encode(), self._partitions)
        target = self._targets.get(partition)
        if target is None:
            target = readable_end(self._offsets, TopicPartition(self.topic, partition))
            self._targets[partition] = target
        wait_s = self.settings.tuning.lookup_wait_s
        deadline = time.monotonic() + wait_s
        while self._at.get((self.topic, partition), 0) < target:
            if time.monotonic() > deadline:
                raise NotReadableYet(f"the accounts table did not reach {self.topic}"
                                     f"[{partition}]@{target} within {wait_s:g} s")
            time.sleep(0.002)
        return self.accounts.get(account) == "OPEN"

    def start(self) -> None:
        """Load the table up to the topic's stable ends; InfrastructureError when it
        makes no progress for tuning.read_stall_s (a partial table would reject open
        accounts as unknown and refuse credits to open rooms)."""
        self._progress_at = time.monotonic()
        self._thread.start()
        stall_s = self.settings.tuning.read_stall_s
        while not self._ready.wait(0.2):
            if time.monotonic() - self._progress_at > stall_s:
                self.stop()
                raise InfrastructureError(
                    f"the accounts table did not load from {self.topic} "
                    f"({self._error or 'no progress'} for {stall_s:g}s)")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except (KafkaException, InfrastructureError) as e:
                self._error = str(e)
                log.warning("accounts table: %s; reading it again in %.0fs", e, RETRY_S)
                self._stop.wait(RETRY_S)

    def _follow(self) -> None:
        consumer = make_consumer(self.settings, None, **{"fetch.wait.max.ms": 50})
        try:
            parts = consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            if not parts:
                raise InfrastructureError(f"no topic {self.topic}")
            if self._ends is None:
                specs = [TopicPartition(self.topic, p) for p in parts]
                found = StableOffsets(self.settings).ends(specs)
                self._ends = {tp.partition: off for tp, off in found.items()}
            tps = [TopicPartition(self.topic, p, self._next.get(p, 0)) for p in parts]
            consumer.assign(tps)
            self._partitions = len(parts)
            while not self._stop.is_set():
                self._take(consumer.consume(1000, timeout=0.1))
                self._look(consumer, parts)
        finally:
            consumer.close()

    def _take(self, msgs: list) -> None:  # type: ignore[type-arg]
        for msg in msgs:
            if msg.error() is None:
                self._apply(msg.value())
                self._next[msg.partition() or 0] = (msg.offset() or 0) + 1
                self._progress_at = time.monotonic()

    def _look(self, consumer: Consumer, parts: Iterable[int]) -> None:
        """Where the table stands (records and transaction markers passed); loaded once
        that is past the ends measured at start."""
        at = positions(consumer, {(self.topic, p): self._next.get(p, 0) for p in parts})
        if at != self._at:
            self._at, self._progress_at = at, time.monotonic()
        if not self._ready.is_set() and self._ends is not None and all(
                at.get((self.topic, p), 0) >= end for p, end in self._ends.items()):
            log.info("accounts table loaded: %d accounts", len(self.accounts))
            self._ready.set()

    def _apply(self, value: bytes | None) -> None:
        try:
            rec = self.codec.decode_as("account", value)
        except CodecError as e:
            log.error("skipping undecodable account record: %s", e)
            return
        self.accounts[rec["account"]] = rec["status"]
