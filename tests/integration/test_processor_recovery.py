"""The processor outlives client-library failures seen when brokers die (injected here).

- A consumer that fails fatally (after a coordinator failover the broker may declare the
  only static member "fenced") is replaced and the group rejoined.
- A transactional call that never returns (librdkafka#5456: send_offsets_to_transaction
  ignores its timeout when the group coordinator is gone) is abandoned: a new producer with
  the same transactional.id fences the stuck one and the batch is retried.
In both cases every command is decided exactly once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError

import ledger.processor.txn as txn_module
from ledger.client import LedgerClient
from ledger.domain import Actor, Earn, OpenAccount
from ledger.settings import Settings
from tests.integration.ledger_helpers import (
    journal,
    party_fold,
    snapshot_balances,
    start_processor,
)

pytestmark = pytest.mark.integration


class _FatalMessage:
    """What consume() returns once librdkafka declares the consumer dead."""

    def error(self) -> KafkaError:
        return KafkaError(KafkaError._FATAL, "Static consumer fenced (injected)")


def _earn_all(client: LedgerClient, ids: list[str]) -> dict[str, Any]:
    futures = {cid: client.submit(Earn(command_id=cid, actor=Actor.USER, reason="",
                                       account="user:rec", amount=1), wait=True) for cid in ids}
    client.flush()
    return {cid: f.result(60) for cid, f in futures.items() if f is not None}


def _exactly_once(settings: Settings, ids: list[str]) -> None:
    entries = journal(settings)
    per_command = [e.command_id for e in entries if e.command_id in ids]
    assert sorted(per_command) == sorted(ids), "each command exactly once in the journal"
    assert snapshot_balances(settings) == party_fold(entries) == {"user:rec": len(ids)}


def test_a_fatally_failed_consumer_is_replaced(settings: Settings) -> None:
    threaded = start_processor(settings, "rejoin")
    processor = threaded.processor
    client = LedgerClient(settings)
    try:
        assert client.send(OpenAccount(command_id="o", actor=Actor.SYSTEM, reason="",
                                       account="user:rec")).accepted
        first = _earn_all(client, [f"a{n}" for n in range(20)])
        assert all(o.accepted for o in first.values())
        consumer = processor.consumer
        assert consumer is not None
        injected = threading.Event()

        class Failing:  # the consumer, whose next poll reports a fatal error
            def __getattr__(self, name: str) -> Any:
                return getattr(consumer, name)

            def poll(self, *args: Any, **kwargs: Any) -> Any:
                if not injected.is_set():
                    injected.set()
                    return _FatalMessage()
                return consumer.poll(*args, **kwargs)

            def consume(self, *args: Any, **kwargs: Any) -> list[Any]:
                if not injected.is_set():
                    injected.set()
                    return [_FatalMessage()]
                return consumer.consume(*args, **kwargs)

        processor.consumer = Failing()  # type: ignore[assignment]
        assert injected.wait(10)
        deadline = time.monotonic() + 60
        while processor.stats.rejoins < 1 or len(processor.committed) < settings.partitions:
            assert time.monotonic() < deadline, "no rejoin"
            time.sleep(0.05)
        assert processor.consumer is not consumer
        second = _earn_all(client, [f"b{n}" for n in range(20)])
        assert all(o.accepted for o in second.values())
        assert threaded.thread.is_alive()
    finally:
        client.close()
        threaded.stop()
    _exactly_once(settings, [*first, *second])


def test_a_stuck_transactional_call_is_fenced_and_the_batch_retried(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(txn_module, "TXN_TIMEOUT_S", 1.0)
    monkeypatch.setattr(txn_module, "WATCHDOG_GRACE_S", 1.0)
    threaded = start_processor(settings, "stuck")
    processor = threaded.processor
    client = LedgerClient(settings)
    release = threading.Event()
    try:
        assert client.send(OpenAccount(command_id="o", actor=Actor.SYSTEM, reason="",
                                       account="user:rec")).accepted
        txn = processor.txn  # idle now: the next batch takes the other producer's turn
        turn = txn.turn ^ 1
        stuck_producer = txn.producers[turn]
        assert stuck_producer is not None

        class Hanging:  # send_offsets_to_transaction never returns (until the test ends)
            def __getattr__(self, name: str) -> Any:
                return getattr(stuck_producer, name)

            def send_offsets_to_transaction(self, *args: Any, **kwargs: Any) -> None:
                release.wait(120)
                stuck_producer.send_offsets_to_transaction(*args, **kwargs)

        txn.producers[turn] = Hanging()  # type: ignore[assignment]
        outcomes = _earn_all(client, [f"s{n}" for n in range(30)])
        assert all(o.accepted for o in outcomes.values())
        assert processor.stats.producer_restarts == 1
        assert txn.producers[turn] is not stuck_producer
        assert threaded.thread.is_alive()
    finally:
        release.set()  # the abandoned call now fails: its producer was fenced
        client.close()
        threaded.stop()
    _exactly_once(settings, list(outcomes))
