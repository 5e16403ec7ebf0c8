"""What one processor instance knows: owned state per partition, and the global accounts table.

Owned state (balances, outcomes by command id, reversed event ids) is restored
on assignment from the compacted points.balances and from points.results, both
co-partitioned with points.commands. A batch's changes live in an overlay that
is merged only after its Kafka transaction commits, so an abort leaves the
committed state untouched.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from ledger.codec import Codec
from ledger.domain import AccountState
from ledger.errors import CodecError
from ledger.kafka import make_consumer, watermarks
from ledger.records import Outcome, snapshot_from_record
from ledger.settings import Settings

log = logging.getLogger("ledger.processor")


@dataclass
class ProcessorStats:
    """Counters for logs and metrics."""

    batches: int = 0
    commands: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    aborts: int = 0
    rejoins: int = 0
    producer_restarts: int = 0
    last_batch_ms: float = 0.0


@dataclass
class PartitionState:
    balances: dict[str, AccountState] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    reversed: set[str] = field(default_factory=set)


class Overlay:
    """A batch's uncommitted changes on top of the committed partition states."""

    def __init__(self, committed: dict[int, PartitionState], accounts: AccountsTable) -> None:
        self.committed = committed
        self.accounts = accounts
        self.reversed_ids = _ReversedIds(self)
        self.reset()

    def reset(self) -> None:
        self.balances: dict[str, AccountState] = {}
        self.outcomes: dict[str, Outcome] = {}
        self.reversed: set[str] = set()
        self.opened: set[str] = set()
        self.partition_of: dict[str, int] = {}

    def bind(self, partition: int) -> None:
        self.partition = partition

    # LedgerView
    def owned(self, account: str) -> AccountState | None:
        state = self.balances.get(account)
        if state is not None:
            return state
        part = self.committed.get(self.partition)
        return part.balances.get(account) if part else None

    def known(self, account: str) -> bool:
        # Accounts this instance owns are known at once; others once the table has them.
        if account in self.opened or self.accounts.known(account):
            return True
        return any(account in part.balances for part in self.committed.values())

    def outcome(self, command_id: str) -> Outcome | None:
        found = self.outcomes.get(command_id)
        if found is None and (part := self.committed.get(self.partition)):
            found = part.outcomes.get(command_id)
        return found

    def is_reversed(self, event_id: object) -> bool:
        if event_id in self.reversed:
            return True
        part = self.committed.get(self.partition)
        return part is not None and event_id in part.reversed

    def put(self, state: AccountState) -> None:
        self.balances[state.account] = state
        self.partition_of[state.account] = self.partition

    def record(self, outcome: Outcome) -> None:
        self.outcomes[outcome.command_id] = outcome
        self.partition_of["\0" + outcome.command_id] = self.partition
        if outcome.accepted and outcome.reverses_event_id:
            self.reversed.add(outcome.reverses_event_id)

    def merge(self) -> None:
        """After commit: fold the batch into the committed state."""
        for account, state in self.balances.items():
            self._part(self.partition_of[account]).balances[account] = state
        for command_id, outcome in self.outcomes.items():
            part = self._part(self.partition_of["\0" + command_id])
            part.outcomes[command_id] = outcome
            if outcome.accepted and outcome.reverses_event_id:
                part.reversed.add(outcome.reverses_event_id)
        self.reset()

    def _part(self, partition: int) -> PartitionState:
        return self.committed.setdefault(partition, PartitionState())


class _ReversedIds:
    """The event ids reversed so far (committed or in the batch), without copying the sets."""

    def __init__(self, overlay: Overlay) -> None:
        self._overlay = overlay

    def __contains__(self, event_id: object) -> bool:
        return self._overlay.is_reversed(event_id)


class AccountsTable:
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


def restore_partition(settings: Settings, codec: Codec, partition: int) -> PartitionState:
    """Owned state of one partition from points.balances and points.results."""
    started = time.monotonic()
    state = PartitionState()
    for rec in _read_partition(settings, codec, "balances", "balance", partition):
        if not rec:
            continue
        state.balances[rec["account"]] = snapshot_from_record(rec)
    for rec in _read_partition(settings, codec, "results", "result", partition):
        if not rec or rec["command_id"] in state.outcomes:
            continue  # a retry's echo: the first outcome stands
        if rec["status"] == "REJECTED" and not rec["payload_fingerprint"]:
            continue  # a refusal (misrouted, unreadable), not a decision: the id stays free
        outcome = Outcome.from_record(rec)
        state.outcomes[outcome.command_id] = outcome
        if outcome.accepted and outcome.reverses_event_id:
            state.reversed.add(outcome.reverses_event_id)
    log.info(
        "partition %d restored: %d balances, %d outcomes in %.0f ms",
        partition,
        len(state.balances),
        len(state.outcomes),
        (time.monotonic() - started) * 1000,
    )
    return state


def _read_partition(
    settings: Settings, codec: Codec, topic_name: str, schema: str, partition: int
) -> list[dict[str, Any]]:
    """Every committed record of one partition up to its last stable offset.

    Stops at the partition-EOF event rather than comparing positions: a
    read_committed end has transaction markers that are never delivered.
    """
    topic = settings.topic(topic_name)
    consumer = make_consumer(
        settings, None, **{"fetch.wait.max.ms": 20, "enable.partition.eof": True}
    )
    try:
        low, high = watermarks(consumer, TopicPartition(topic, partition))
        out: list[dict[str, Any]] = []
        if high <= low:
            return out
        consumer.assign([TopicPartition(topic, partition, low)])
        while True:
            for msg in consumer.consume(5000, timeout=0.2):
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    return out
                if err is None:
                    out.append(_decode_or_log(codec, schema, msg.value()))
    finally:
        consumer.close()


def _decode_or_log(codec: Codec, schema: str, value: bytes | None) -> dict[str, Any]:
    try:
        return codec.decode_as(schema, value)
    except CodecError as e:
        # The processor wrote these itself; a bad one is a bug to see, not a reason to stop.
        log.error("undecodable %s record in a changelog: %s", schema, e)
        return {}
