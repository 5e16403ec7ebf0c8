"""Rotating the credit key: processors that sign with different keys, each listing the
other's in LEDGER_CREDIT_KEYS, apply each other's routed credits (a rollout loses none); a
credit under a key no processor holds is dead-lettered and counted, never applied."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, Message

from ledger.client import LedgerClient, new_command_id
from ledger.credits import CreditSigner
from ledger.domain import Actor, ApplyCredit, Join, OpenAccount, Spend
from ledger.kafka import make_producer, partition_for
from ledger.records import Outcome, ReverseRef, command_to_record
from ledger.settings import Settings
from ledger.wire import Codec
from tests.integration.ledger_helpers import (
    snapshot_balances,
    start_processor,
    wait_for_processor_idle,
)
from tests.integration.observe import Observer

pytestmark = pytest.mark.integration

MakeSettings = Callable[..., Settings]


def _on_partition(settings: Settings, kind: str, partition: int) -> str:
    return next(f"{kind}:{kind[0]}{i}" for i in range(1000)
                if partition_for(f"{kind}:{kind[0]}{i}".encode(), settings.partitions) == partition)


def test_a_rollout_between_two_keys_loses_no_credit(make_settings: MakeSettings) -> None:
    """Mid-roll: one instance signs with A, the other with B, each accepting the other's."""
    settings = make_settings(partitions=2)
    old = start_processor(settings.with_(credit_key="key-A", accepted_credit_keys=("key-B",)),
                          "old")
    new = start_processor(settings.with_(credit_key="key-B", accepted_credit_keys=("key-A",)),
                          "new", expect_partitions=1)
    client = LedgerClient(settings)
    try:
        # Two partitions, one per instance: each credit crosses from one key to the other.
        pairs = [(_on_partition(settings, "user", p), _on_partition(settings, "room", 1 - p))
                 for p in (0, 1)]
        for user, room in pairs:
            for account, grant in ((user, 30), (room, 0)):
                assert client.send(OpenAccount(command_id=new_command_id(), actor=Actor.SYSTEM,
                                               reason="", account=account, grant=grant)).accepted
        for user, room in pairs:
            assert _join_once_known(client, user, room).accepted
            # On the room's partition after its credit: accepted only if the credit landed.
            spent = client.send(Spend(command_id=new_command_id(), actor=Actor.USER, reason="",
                                      account=room, amount=20))
            assert spent.accepted, spent
        wait_for_processor_idle(settings)
        refused = old.processor.stats.credits_refused + new.processor.stats.credits_refused
    finally:
        client.close()
        new.stop()
        old.stop()
    assert refused == 0
    assert snapshot_balances(settings) == {a: 10 if a.startswith("user:") else 0
                                           for pair in pairs for a in pair}


def _produce_credit(settings: Settings, signer: CreditSigner, room: str,
                    amount: int) -> tuple[int, int]:
    """A routed credit to `room` as a processor signing with `signer` would write it."""
    credit = ApplyCredit(command_id=f"credit:{uuid.uuid4()}:{room}", actor=Actor.USER,
                         reason="join", account=room, amount=amount, event_id=str(uuid.uuid4()))
    source = ReverseRef(credit.event_id, 0, 10**9 + amount)  # a position nothing else uses
    value = Codec().encode("command", command_to_record(credit, int(time.time() * 1000), source))
    delivered: list[Message] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        delivered.append(msg)

    producer = make_producer(settings)
    producer.produce(settings.topic("commands"), key=room.encode(), value=value,
                     headers=signer.sign(value), on_delivery=on_delivery)
    assert producer.flush(30) == 0
    partition, offset = delivered[0].partition(), delivered[0].offset()
    assert partition is not None and offset is not None
    return partition, offset


def test_a_credit_under_a_key_no_instance_holds_is_dead_lettered(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(partitions=2).with_(credit_key="key-B",
                                                  accepted_credit_keys=("key-A",))
    running = start_processor(settings, "rotated")
    observer = Observer(settings)
    client = LedgerClient(settings)
    try:
        assert client.send(OpenAccount(command_id=new_command_id(), actor=Actor.SYSTEM,
                                       reason="", account="room:rot")).accepted
        _produce_credit(settings, CreditSigner("key-A"), "room:rot", 7)  # the old key: applied
        where = _produce_credit(settings, CreditSigner("key-X"), "room:rot", 1000)
        letter = observer.dead_letter(*where)
        wait_for_processor_idle(settings)
        refused = running.processor.stats.credits_refused
    finally:
        client.close()
        observer.stop()
        running.stop()
    assert refused == 1
    assert letter.source == where
    assert snapshot_balances(settings) == {"room:rot": 7}


def _join_once_known(client: LedgerClient, user: str, room: str) -> Outcome:
    """The join, sent again while the user's owner has not yet seen the room opened on
    the other instance (its global accounts table lags a moment: an honest rejection)."""
    deadline = time.monotonic() + 30
    while True:
        outcome = client.send(Join(command_id=new_command_id(), actor=Actor.USER, reason="",
                                   user=user, room=room, fee=20))
        if outcome.reason != "unknown_account" or time.monotonic() > deadline:
            return outcome
        time.sleep(0.2)
