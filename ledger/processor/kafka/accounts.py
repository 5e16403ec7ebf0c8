"""KafkaAccountsTable: every opened account, consumed continuously from points.accounts.

Like a GlobalKTable: every instance reads the whole compacted topic, so the owner of a
user can check that a room owned elsewhere exists. A room opened a moment ago may briefly
be unknown, which is an honest rejection, not a loss. A table loaded only in part is not:
`start` returns once the table reached the topic's stable ends as they were at start.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from ledger.errors import CodecError, InfrastructureError
from ledger.kafka import make_consumer, positions
from ledger.processor.kafka.offsets import StableOffsets
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
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._progress_at = time.monotonic()
        self._error = ""
        self._thread = threading.Thread(target=self._run, name="accounts-table", daemon=True)

    def known(self, account: str) -> bool:
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
            while not self._stop.is_set():
                self._take(consumer.consume(1000, timeout=0.1))
                if not self._ready.is_set():
                    self._check_loaded(consumer)
        finally:
            consumer.close()

    def _take(self, msgs: list) -> None:  # type: ignore[type-arg]
        for msg in msgs:
            if msg.error() is None:
                self._apply(msg.value())
                self._next[msg.partition() or 0] = (msg.offset() or 0) + 1
                self._progress_at = time.monotonic()

    def _check_loaded(self, consumer: Consumer) -> None:
        assert self._ends is not None
        ends = {(self.topic, p): end for p, end in self._ends.items()}
        at = positions(consumer, {key: self._next.get(key[1], 0) for key in ends})
        if at != self._at:  # records or transaction markers passed
            self._at, self._progress_at = at, time.monotonic()
        if all(at[key] >= end for key, end in ends.items()):
            log.info("accounts table loaded: %d accounts", len(self.accounts))
            self._ready.set()

    def _apply(self, value: bytes | None) -> None:
        try:
            rec = self.codec.decode_as("account", value)
        except CodecError as e:
            log.error("skipping undecodable account record: %s", e)
            return
        self.accounts[rec["account"]] = rec["status"]
