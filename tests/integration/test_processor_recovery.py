"""The processor outlives client-library failures, injected through the wiring's client seam.

- A consumer that fails fatally (after a coordinator failover the broker may declare the
  only static member "fenced") is replaced and the group rejoined.
- A transactional call that never returns (librdkafka#5456) is abandoned: a new producer
  with the same transactional.id settles the transaction, and the processor
  re-synchronises from the committed offsets.
- A commit that succeeds on the broker and then reports a retriable error (the outcome
  is unknown to the caller) is called again, as librdkafka's book says; if it keeps
  failing the producer is replaced and the processor re-synchronises. Never a second
  decision of a committed batch.
In every case each command is decided exactly once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from ledger.client import LedgerClient
from ledger.domain import Actor, Earn, OpenAccount
from ledger.kafka import make_consumer, make_producer
from ledger.processor.service import ProcessorTuning
from ledger.settings import Settings
from ledger.wiring import ProcessorClients
from tests.integration.ledger_helpers import (
    journal,
    party_fold,
    snapshot_balances,
    start_processor,
)

pytestmark = pytest.mark.integration


class Faults:
    """What the next Kafka calls of the processor's clients do wrong (set by the test)."""

    def __init__(self) -> None:
        self.fatal_consume = threading.Event()
        self.hang_send_offsets = threading.Event()
        self.release = threading.Event()
        self.unknown_commits = 0  # commits that succeed, then raise a retriable error
        self.stuck_retries = False  # ... and keep raising it on every call again
        self.injected = 0

    def clients(self) -> ProcessorClients:
        return ProcessorClients(
            producer=lambda *a, **k: FaultyProducer(make_producer(*a, **k), self),
            consumer=lambda *a, **k: FaultyConsumer(make_consumer(*a, **k), self),
        )


class FaultyProducer:
    def __init__(self, real: Producer, faults: Faults) -> None:
        self._real, self._faults, self._committed_unseen = real, faults, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def send_offsets_to_transaction(self, *args: Any) -> None:
        if self._faults.hang_send_offsets.is_set():
            self._faults.hang_send_offsets.clear()
            self._faults.injected += 1
            self._faults.release.wait(120)
        self._real.send_offsets_to_transaction(*args)

    def commit_transaction(self, *args: Any) -> None:
        if self._committed_unseen:  # the caller asks again about a commit that happened
            if self._faults.stuck_retries:
                raise _retriable()
            self._committed_unseen = False
            return
        inject = self._faults.unknown_commits > 0
        if inject:  # counted before the commit: its results are visible the moment it lands
            self._faults.unknown_commits -= 1
            self._faults.injected += 1
        self._real.commit_transaction(*args)
        if inject:
            self._committed_unseen = True
            raise _retriable()


class FaultyConsumer:
    def __init__(self, real: Consumer, faults: Faults) -> None:
        self._real, self._faults = real, faults

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        if self._faults.fatal_consume.is_set():
            self._faults.fatal_consume.clear()
            self._faults.injected += 1
            return _FatalMessage()
        return self._real.poll(*args, **kwargs)


class _FatalMessage:
    """What consume() returns once librdkafka declares the consumer dead."""

    def error(self) -> KafkaError:
        return KafkaError(KafkaError._FATAL, "Static consumer fenced (injected)")


def _retriable() -> KafkaException:
    return KafkaException(KafkaError(KafkaError._TIMED_OUT, "injected: commit outcome unknown",
                                     retriable=True))


def _earn_all(client: LedgerClient, ids: list[str]) -> dict[str, Any]:
    futures = {cid: client.submit(Earn(command_id=cid, actor=Actor.USER, reason="",
                                       account="user:rec", amount=1), wait=True) for cid in ids}
    client.flush()
    return {cid: f.result(90) for cid, f in futures.items() if f is not None}


def _exactly_once(settings: Settings, ids: list[str]) -> None:
    entries = journal(settings)
    per_command = [e.command_id for e in entries if e.command_id in ids]
    assert sorted(per_command) == sorted(ids), "each command exactly once in the journal"
    assert snapshot_balances(settings) == party_fold(entries) == {"user:rec": len(ids)}


def _run(settings: Settings, name: str, faults: Faults, inject: Any,
         tuning: ProcessorTuning | None = None) -> Any:
    threaded = start_processor(settings, name, clients=faults.clients(), tuning=tuning)
    client = LedgerClient(settings)
    outcomes: dict[str, Any] = {}
    try:
        assert client.send(OpenAccount(command_id="o", actor=Actor.SYSTEM, reason="",
                                       account="user:rec")).accepted
        outcomes |= _earn_all(client, [f"a{n}" for n in range(20)])
        inject()
        # A round can be taken whole by a poll that began before the fault was armed, so
        # rounds go on until the fault struck, then one more proves the processor recovered.
        for attempt in range(1, 6):
            outcomes |= _earn_all(client, [f"b{attempt}-{n}" for n in range(30)])
            if faults.injected >= 1:
                break
        assert faults.injected >= 1, "the fault was never injected"
        outcomes |= _earn_all(client, [f"c{n}" for n in range(10)])
        assert all(o.accepted for o in outcomes.values())
        assert threaded.thread.is_alive()
        return threaded.processor
    finally:
        faults.release.set()
        client.close()
        threaded.stop()
        _exactly_once(settings, list(outcomes))


def test_a_fatally_failed_consumer_is_replaced(settings: Settings) -> None:
    faults = Faults()
    processor = _run(settings, "rejoin", faults, faults.fatal_consume.set)
    assert processor.stats.rejoins == 1


def test_a_stuck_transactional_call_is_fenced_and_the_partitions_resynced(
    settings: Settings,
) -> None:
    faults = Faults()
    tuning = ProcessorTuning(max_batch=500, txn_timeout_s=1.0)
    processor = _run(settings, "stuck", faults, faults.hang_send_offsets.set, tuning)
    assert processor.stats.producer_restarts == 1 and processor.stats.resyncs >= 1


def test_a_commit_that_succeeded_then_failed_retriably_is_not_decided_again(
    settings: Settings,
) -> None:
    """The unknown commit outcome: librdkafka says call commit_transaction again."""
    faults = Faults()

    def inject() -> None:
        faults.unknown_commits = 3

    processor = _run(settings, "unknown", faults, inject)
    assert processor.stats.commit_retries >= 1
    assert processor.stats.producer_restarts == 0


def test_a_commit_whose_outcome_stays_unknown_resyncs_from_the_log(settings: Settings) -> None:
    """Retries never answer: the producer is replaced (its successor settles the
    transaction) and state and positions come from the committed offsets and changelogs."""
    faults = Faults()

    def inject() -> None:
        faults.stuck_retries = True
        faults.unknown_commits = 1

    tuning = ProcessorTuning(max_batch=500, txn_timeout_s=1.0)
    started = time.monotonic()
    processor = _run(settings, "unknown-stuck", faults, inject, tuning)
    assert processor.stats.producer_restarts >= 1 and processor.stats.resyncs >= 1
    assert time.monotonic() - started < 120
