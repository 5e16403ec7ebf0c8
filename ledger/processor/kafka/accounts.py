"""KafkaAccountsTable: every opened account, consumed continuously from points.accounts.

Like a GlobalKTable: every instance reads the whole compacted topic, so the owner of a
user can check that a room owned elsewhere exists. A room opened a moment ago may briefly
be unknown, which is an honest rejection, not a loss.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import KafkaError, TopicPartition

from ledger.errors import CodecError
from ledger.kafka import make_consumer
from ledger.settings import Settings
from ledger.wire import Codec

log = logging.getLogger("ledger.processor")


class KafkaAccountsTable:
    """Every opened account, consumed continuously from the compacted points.accounts."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings, self.codec = settings, codec
        self.accounts: dict[str, str] = {}  # account -> status
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="accounts-table", daemon=True)

    def known(self, account: str) -> bool:
        return self.accounts.get(account) == "OPEN"

    def start(self, timeout: float = 60.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            log.warning("accounts table not caught up after %.0fs; continuing", timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        consumer = make_consumer(
            self.settings, None, **{"fetch.wait.max.ms": 50, "enable.partition.eof": True}
        )
        topic = self.settings.topic("accounts")
        parts = set(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(1000, timeout=0.1):
                    err = msg.error()
                    if err is None:
                        self._apply(msg.value())
                    elif err.code() == KafkaError._PARTITION_EOF:
                        parts.discard(msg.partition())
                if not parts and not self._ready.is_set():
                    log.info("accounts table loaded: %d accounts", len(self.accounts))
                    self._ready.set()
        finally:
            consumer.close()

    def _apply(self, value: bytes | None) -> None:
        try:
            rec = self.codec.decode_as("account", value)
        except CodecError as e:
            log.error("skipping undecodable account record: %s", e)
            return
        self.accounts[rec["account"]] = rec["status"]
