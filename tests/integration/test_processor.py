"""The command processor against the real broker: seed operations, floors, idempotency."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator

import pytest

from ledger.client import LedgerClient, new_command_id
from ledger.domain import Actor, Command, Earn, Join, OpenAccount, Reverse, Spend
from ledger.journal import find_event
from ledger.records import Outcome
from ledger.settings import Settings
from tests.integration.ledger_helpers import (
    ThreadedProcessor,
    journal,
    party_fold,
    snapshot_balances,
    start_processor,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def running(settings: Settings) -> Iterator[ThreadedProcessor]:
    proc = start_processor(settings)
    yield proc
    proc.stop()


@pytest.fixture
def client(settings: Settings, running: ThreadedProcessor) -> Iterator[LedgerClient]:
    c = LedgerClient(settings)
    yield c
    c.close()


Send = Callable[..., Outcome]


@pytest.fixture
def send(client: LedgerClient) -> Send:
    """Factory: build a command of a kind with defaults, send it, return its outcome."""

    def _send(kind: type, command_id: str | None = None, **fields: object) -> Outcome:
        cmd: Command = kind(
            command_id=command_id or new_command_id(),
            actor=Actor.USER,
            reason=str(fields.pop("reason", "test")),
            **fields,
        )
        return client.send(cmd, timeout=30)

    return _send


def test_seed_operations_end_to_end(settings: Settings, send: Send) -> None:
    assert send(OpenAccount, account="user:alice", grant=50).accepted  # create-user-point
    assert send(OpenAccount, account="room:math").accepted  # create-study-point
    assert send(Earn, account="user:alice", amount=70).accepted  # add-user-point
    assert send(Earn, account="room:math", amount=5).accepted  # add-study-point
    joined = send(Join, user="user:alice", room="room:math", fee=100)  # the join
    assert joined.accepted and len(joined.event_ids) == 1
    assert send(Spend, account="user:alice", amount=20).accepted  # sub-user-point
    assert send(Spend, account="room:math", amount=105).accepted  # sub-study-point: uses credit
    entries = journal(settings)
    assert sorted(str(e.kind) for e in entries) == sorted(
        ["GRANTED", "EARNED", "EARNED", "JOINED", "SPENT", "SPENT"]
    )
    assert all(sum(p.amount for p in e.postings) == 0 for e in entries)
    join_entry = next(e for e in entries if e.event_id == joined.event_ids[0])
    assert {(p.account, p.amount) for p in join_entry.postings} == {
        ("user:alice", -100),
        ("room:math", 100),
    }
    assert party_fold(entries) == {"user:alice": 0, "room:math": 0}
    assert snapshot_balances(settings) == {"user:alice": 0, "room:math": 0}


def test_overdraft_is_rejected_without_an_event(settings: Settings, send: Send) -> None:
    assert send(OpenAccount, account="user:bob", grant=10).accepted
    out = send(Spend, account="user:bob", amount=11)
    assert (out.accepted, out.reason) == (False, "insufficient_points")
    assert [str(e.kind) for e in journal(settings)] == ["GRANTED"]
    assert snapshot_balances(settings)["user:bob"] == 10


def test_unknown_and_invalid(send: Send) -> None:
    assert send(Earn, account="user:nobody", amount=5).reason == "unknown_account"
    assert send(OpenAccount, account="user:carol").accepted
    assert send(OpenAccount, account="user:carol").reason == "account_exists"
    assert send(Earn, account="user:carol", amount=0).reason == "invalid_amount"
    assert send(Join, user="user:carol", room="room:none", fee=1).reason == "unknown_account"


def test_retried_command_id_gives_the_first_outcome_and_one_event(
    settings: Settings, send: Send
) -> None:
    assert send(OpenAccount, account="user:dan", grant=100).accepted
    first = send(Spend, command_id="spend-1", account="user:dan", amount=60)
    again = send(Spend, command_id="spend-1", account="user:dan", amount=60)
    assert first.accepted and again == first
    conflict = send(Spend, command_id="spend-1", account="user:dan", amount=61)
    assert (conflict.accepted, conflict.reason) == (False, "conflict")
    spent = [e for e in journal(settings) if e.command_id == "spend-1"]
    assert len(spent) == 1
    assert snapshot_balances(settings)["user:dan"] == 40


def test_join_credit_reaches_the_room_before_its_spend(settings: Settings, send: Send) -> None:
    # Find a user and a room that hash to different partitions: a real cross-partition credit.
    from ledger.kafka import partition_for

    room = next(
        f"room:r{i}"
        for i in range(100)
        if partition_for(f"room:r{i}".encode(), settings.partitions)
        != partition_for(b"user:eve", settings.partitions)
    )
    assert send(OpenAccount, account="user:eve", grant=40).accepted
    assert send(OpenAccount, account=room).accepted
    for _ in range(3):
        assert send(Join, user="user:eve", room=room, fee=10).accepted
        assert send(Spend, account=room, amount=10).accepted
    assert send(Spend, account=room, amount=1).reason == "insufficient_points"
    assert snapshot_balances(settings) == {"user:eve": 10, room: 0}


def test_reverse_a_join_and_an_earn(settings: Settings, send: Send, client: LedgerClient) -> None:
    assert send(OpenAccount, account="user:fay", grant=30).accepted
    assert send(OpenAccount, account="room:art").accepted
    joined = send(Join, user="user:fay", room="room:art", fee=30)
    found = find_event(settings, joined.event_ids[0])
    assert found.entry is not None
    rev = Reverse(
        command_id=new_command_id(),
        actor=Actor.ADMIN,
        reason="refund",
        event_id=found.entry.event_id,
        original=found.entry.postings,
    )
    out = client.send(rev, found.ref)
    assert out.accepted, out
    again = Reverse(
        command_id=new_command_id(),
        actor=Actor.ADMIN,
        reason="refund twice",
        event_id=found.entry.event_id,
        original=found.entry.postings,
    )
    assert client.send(again, found.ref).reason == "already_reversed"
    entries = journal(settings)
    reversal = next(e for e in entries if e.reverses_event_id == joined.event_ids[0])
    assert {(p.account, p.amount) for p in reversal.postings} == {
        ("user:fay", 30),
        ("room:art", -30),
    }
    assert snapshot_balances(settings) == {"user:fay": 30, "room:art": 0}


def test_concurrent_spenders_never_breach_the_floor(settings: Settings, send: Send) -> None:
    assert send(OpenAccount, account="user:pool", grant=1000, floor=100).accepted
    outcomes: list[tuple[int, Outcome]] = []
    lock = threading.Lock()

    def spender(seed: int) -> None:
        rng = random.Random(seed)
        c = LedgerClient(settings)
        futures = []
        for _ in range(40):
            amount = rng.randint(1, 60)
            cmd = Spend(
                command_id=new_command_id(),
                actor=Actor.USER,
                reason="race",
                account="user:pool",
                amount=amount,
            )
            futures.append((amount, c.submit(cmd, wait=True)))
        c.flush()
        for amount, fut in futures:
            assert fut is not None
            with lock:
                outcomes.append((amount, fut.result(60)))
        c.close()

    threads = [threading.Thread(target=spender, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = sum(a for a, o in outcomes if o.accepted)
    assert len(outcomes) == 240
    assert any(not o.accepted for _, o in outcomes), "the pool should run dry"
    assert all(o.reason == "insufficient_points" for _, o in outcomes if not o.accepted)
    assert 0 < accepted <= 900
    balance = snapshot_balances(settings)["user:pool"]
    assert balance == 1000 - accepted >= 100
    assert party_fold(journal(settings))["user:pool"] == balance
