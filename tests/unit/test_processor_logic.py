"""The command processor's logic on the in-memory adapters: decisions, deduplication,
recovery from each kind of transaction failure, ownership, credit marks. No broker: each
test runs in milliseconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.credits import CreditSigner
from ledger.domain import Actor, Command, Earn, Join, OpenAccount, Reverse, Spend
from ledger.errors import InfrastructureError
from ledger.kafka import partition_for
from ledger.processor import CommandProcessor
from ledger.processor.memory import (
    InMemoryBroker,
    InMemoryCommandSource,
    InMemoryJournalLookup,
    InMemoryTransactionalSink,
)
from ledger.processor.ports import Failure
from ledger.processor.service import ProcessorTuning
from ledger.records import ReverseRef, command_to_record, entry_from_record
from ledger.settings import Settings
from ledger.wire import Codec
from ledger.wiring import build_processor

PARTITIONS = 3
CODEC = Codec()
USER, OTHER, ROOM = "user:alice", "user:bob", "room:math"


class Ledger:
    """One in-memory broker, processors on it, and what a client and an auditor see."""

    def __init__(self, tmp_path: Path) -> None:
        self.broker = InMemoryBroker(PARTITIONS)
        self.settings = Settings(topic_prefix="unit", partitions=PARTITIONS,
                                 state_dir=tmp_path / "state", home=tmp_path,
                                 credit_key="unit-test-credit-key")
        self.processors: list[CommandProcessor] = []

    def start(self, instance: str = "p0") -> CommandProcessor:
        processor = build_processor(self.settings, instance, memory=self.broker,
                                    tuning=ProcessorTuning(max_batch=100, batch_timeout_s=0))
        processor.start()
        self.processors.append(processor)
        return processor

    def stop(self, processor: CommandProcessor) -> None:
        processor.close()
        self.processors.remove(processor)

    def send(self, command: Command, ref: ReverseRef | None = None) -> None:
        record = command_to_record(command, int(time.time() * 1000), ref)
        self.broker.produce(self.topic("commands"), CODEC.encode("command", record),
                            command.deciding_account.encode())

    def settle(self, processor: CommandProcessor, turns: int = 50) -> None:
        """Turns of the loop until it has consumed everything it owns."""
        for _ in range(turns):
            processor.turn()
            source = source_of(processor)
            ends = {p: len(self.broker.log(self.topic("commands"), p)) for p in source.positions}
            if (source.positions == ends and not source.rebalancing
                    and source.positions.keys() == processor.group.owned):
                return
        raise AssertionError("the processor did not settle")

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def values(self, name: str, schema: str) -> list[dict[str, Any]]:
        return [CODEC.decode_as(schema, r.value())
                for p in range(PARTITIONS) for r in self.broker.log(self.topic(name), p)]

    def results(self, command_id: str) -> list[dict[str, Any]]:
        return [r for r in self.values("results", "result") if r["command_id"] == command_id]

    def result(self, command_id: str) -> dict[str, Any]:
        found = self.results(command_id)
        assert found, f"no result for {command_id}"
        return found[-1]

    def journal(self) -> list[Any]:
        return [entry_from_record(r) for r in self.values("events", "event")]

    def balances(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for entry in self.journal():
            for posting in entry.postings:
                if not posting.account.startswith("system:"):
                    out[posting.account] = out.get(posting.account, 0) + posting.amount
        return out

    def snapshots(self) -> dict[str, int]:
        return {r["account"]: r["balance"] for r in self.values("balances", "balance")}


def source_of(processor: CommandProcessor) -> InMemoryCommandSource:
    assert isinstance(processor.source, InMemoryCommandSource)
    return processor.source


def sink_of(processor: CommandProcessor) -> InMemoryTransactionalSink:
    assert isinstance(processor.sink, InMemoryTransactionalSink)
    return processor.sink


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    made = Ledger(tmp_path)
    yield made
    for processor in list(made.processors):
        made.stop(processor)


@pytest.fixture
def processor(ledger: Ledger) -> CommandProcessor:
    return ledger.start()


def open_(account: str, cid: str = "", grant: int = 0) -> OpenAccount:
    return OpenAccount(command_id=cid or f"open-{account}", actor=Actor.SYSTEM, reason="",
                       account=account, grant=grant)


def earn(cid: str, amount: int, account: str = USER) -> Earn:
    return Earn(command_id=cid, actor=Actor.USER, reason="", account=account, amount=amount)


def spend(cid: str, amount: int, account: str = USER) -> Spend:
    return Spend(command_id=cid, actor=Actor.USER, reason="", account=account, amount=amount)


def commands_once(ledger: Ledger, *ids: str) -> None:
    """Every id decided: accepted ones in the journal exactly once, snapshots = the fold."""
    per_id = [e.command_id for e in ledger.journal()]
    for cid in ids:
        assert per_id.count(cid) == 1, f"{cid} is in the journal {per_id.count(cid)} times"
    assert ledger.snapshots() == ledger.balances()


def test_earn_spend_and_join_are_decided(ledger: Ledger, processor: CommandProcessor) -> None:
    for command in (open_(USER, grant=10), open_(ROOM), earn("e1", 5), spend("s1", 100),
                    spend("s2", 3)):
        ledger.send(command)
    ledger.settle(processor)
    ledger.send(Join(command_id="j1", actor=Actor.USER, reason="", user=USER, room=ROOM, fee=4))
    ledger.settle(processor)
    assert ledger.result("e1")["status"] == "ACCEPTED"
    assert ledger.result("s1")["reason"] == "insufficient_points"
    assert ledger.result("j1")["status"] == "ACCEPTED"
    assert ledger.balances() == {USER: 8, ROOM: 4} == ledger.snapshots()
    assert processor.stats.rejected == {"insufficient_points": 1}
    commands_once(ledger, "e1", "s2", "j1")


def test_an_unknown_account_is_rejected(ledger: Ledger, processor: CommandProcessor) -> None:
    ledger.send(earn("e1", 5, account=OTHER))
    ledger.settle(processor)
    assert ledger.result("e1")["reason"] == "unknown_account"
    assert ledger.journal() == []


def test_a_retried_id_gets_its_first_outcome_and_another_payload_conflicts(
    ledger: Ledger, processor: CommandProcessor
) -> None:
    ledger.send(open_(USER))
    ledger.send(earn("e1", 5))
    ledger.settle(processor)
    ledger.send(earn("e1", 5))
    ledger.send(earn("e1", 7))
    ledger.settle(processor)
    first, again, other = ledger.results("e1")
    assert first["status"] == again["status"] == "ACCEPTED"
    assert again["event_ids"] == first["event_ids"]
    assert other["reason"] == "conflict"
    assert ledger.balances() == {USER: 5}
    commands_once(ledger, "e1")


def test_an_aborted_transaction_rewinds_and_decides_the_batch_again_once(
    ledger: Ledger, processor: CommandProcessor
) -> None:
    ledger.send(open_(USER))
    ledger.settle(processor)
    sink_of(processor).fail_commit(Failure.ABORTABLE)
    ids = [f"e{n}" for n in range(10)]
    for cid in ids:
        ledger.send(earn(cid, 1))
    ledger.settle(processor)
    assert processor.stats.aborts == 1 and sink_of(processor).aborts == 1
    assert all(len(ledger.results(cid)) == 1 for cid in ids)
    commands_once(ledger, *ids)
    assert ledger.balances() == {USER: 10}


@pytest.mark.parametrize("kind", [Failure.COMMIT_UNKNOWN, Failure.FATAL])
@pytest.mark.parametrize("landed", [True, False])
def test_a_commit_of_unknown_outcome_resyncs_and_never_decides_a_batch_twice(
    ledger: Ledger, processor: CommandProcessor, kind: Failure, landed: bool
) -> None:
    """Whether or not the commit took, state and positions come from the log."""
    ledger.send(open_(USER))
    ledger.settle(processor)
    sink_of(processor).fail_commit(kind, landed=landed)
    ids = [f"e{n}" for n in range(10)]
    for cid in ids:
        ledger.send(earn(cid, 1))
    ledger.settle(processor)
    assert sink_of(processor).replaced == 1 and processor.stats.resyncs == 1
    assert processor.stats.aborts == 0
    assert all(len(ledger.results(cid)) == 1 for cid in ids)
    commands_once(ledger, *ids)
    ledger.send(spend("s1", 10))  # the restored balance is the journal's
    ledger.settle(processor)
    assert ledger.result("s1")["status"] == "ACCEPTED"
    assert ledger.balances() == {USER: 0} == ledger.snapshots()


def test_a_fenced_sink_stops_the_processor(ledger: Ledger, processor: CommandProcessor) -> None:
    ledger.send(open_(USER))
    sink_of(processor).fail_commit(Failure.FENCED)
    with pytest.raises(InfrastructureError, match="fenced"):
        ledger.settle(processor)
    assert ledger.journal() == [] and ledger.results("open-" + USER) == []


def test_records_of_a_partition_revoked_meanwhile_are_not_decided(
    ledger: Ledger, processor: CommandProcessor
) -> None:
    """A batch fetched before its partition was revoked is decided by nobody here."""
    ledger.send(open_(USER))
    ledger.settle(processor)
    mine = partition_for(USER.encode(), PARTITIONS)
    ledger.send(earn("e1", 5))
    source_of(processor).revoke([mine])
    processor.turn()
    assert mine not in processor.group.owned
    assert processor.stats.dropped_unowned == 1 and ledger.results("e1") == []
    for _ in range(3):
        processor.turn()
    assert ledger.results("e1") == []
    source_of(processor).assign([mine])
    ledger.settle(processor)
    assert ledger.result("e1")["status"] == "ACCEPTED"
    commands_once(ledger, "e1")


def test_a_dead_source_is_reopened_and_the_partitions_restored(
    ledger: Ledger, processor: CommandProcessor
) -> None:
    ledger.send(open_(USER))
    ledger.settle(processor)
    source_of(processor).fail_next_consume("member fenced (injected)")
    ledger.send(earn("e1", 5))
    ledger.settle(processor)
    assert processor.stats.rejoins == 1
    assert processor.group.owned == set(range(PARTITIONS))
    commands_once(ledger, "e1")


def _room_elsewhere(ledger: Ledger) -> tuple[str, str]:
    """A user and a room on different partitions: a join routes a credit."""
    user_partition = partition_for(USER.encode(), PARTITIONS)
    room = next(r for r in (f"room:r{n}" for n in range(50))
                if partition_for(r.encode(), PARTITIONS) != user_partition)
    return USER, room


def test_a_routed_credit_is_applied_once_even_when_its_record_comes_again(
    ledger: Ledger, processor: CommandProcessor
) -> None:
    user, room = _room_elsewhere(ledger)
    for command in (open_(user, grant=10), open_(room)):
        ledger.send(command)
    ledger.settle(processor)
    ledger.send(Join(command_id="j1", actor=Actor.USER, reason="", user=user, room=room,
                     fee=4))
    ledger.settle(processor)
    credits = [r for p in range(PARTITIONS) for r in ledger.broker.log(ledger.topic("commands"), p)
               if CODEC.decode_as("command", r.value())["kind"] == "APPLY_CREDIT"]
    assert len(credits) == 1
    marks = [g for g in ledger.values("guards", "guard") if g["kind"] == "CREDITS_APPLIED"]
    assert [m["accounts"] for m in marks] == [[room]]
    credit = credits[0]
    ledger.stop(processor)
    restarted = ledger.start("p0")  # the state from its file, and the changelogs' tails
    ledger.broker.produce(credit.topic() or "", credit.value(), credit.key(),
                          headers=credit.headers())  # byte for byte, signature and all
    ledger.settle(restarted)
    credit_id = CODEC.decode_as("command", credit.value())["command_id"]
    first, again = ledger.results(credit_id)  # within the window: its first outcome again
    assert again["event_ids"] == first["event_ids"]
    # The same credit under another id (signed by a processor key): the mark refuses it.
    renamed = {**CODEC.decode_as("command", credit.value()), "command_id": "credit-again"}
    value = CODEC.encode("command", renamed)
    ledger.broker.produce(credit.topic() or "", value, credit.key(),
                          headers=CreditSigner(ledger.settings.credit_key).sign(value))
    ledger.settle(restarted)
    assert ledger.result("credit-again")["reason"] == "already_applied"
    assert ledger.balances() == {user: 6, room: 4} == ledger.snapshots()


def test_a_forged_credit_is_dead_lettered(ledger: Ledger, processor: CommandProcessor) -> None:
    ledger.send(open_(ROOM))
    ledger.settle(processor)
    forged = command_to_record(earn("forged", 1000, ROOM), int(time.time() * 1000))
    forged.update(kind="APPLY_CREDIT", ref_event_id="e-none")
    ledger.broker.produce(ledger.topic("commands"), CODEC.encode("command", forged),
                          ROOM.encode())
    ledger.settle(processor)
    assert processor.stats.credits_refused == 1 and processor.stats.dead_letters == 1
    assert len(ledger.values("deadletter", "command")) == 1
    assert ledger.balances() == {}


def earned_event(ledger: Ledger, processor: CommandProcessor) -> tuple[Any, ReverseRef]:
    """USER opened and paid 5: the earn's journal entry and its position."""
    ledger.send(open_(USER))
    ledger.send(earn("e1", 5))
    ledger.settle(processor)
    entry = ledger.journal()[-1]
    log = ledger.broker.log(ledger.topic("events"), partition_for(USER.encode(), PARTITIONS))
    return entry, ReverseRef(entry.event_id, log[-1].partition() or 0, log[-1].offset() or 0)


def reverse(cid: str, entry: Any) -> Reverse:
    return Reverse(command_id=cid, actor=Actor.ADMIN, reason="", event_id=entry.event_id,
                   original=entry.postings)


def test_a_reversal_reverses_once(ledger: Ledger, processor: CommandProcessor) -> None:
    entry, ref = earned_event(ledger, processor)
    for cid in ("r1", "r2"):
        ledger.send(reverse(cid, entry), ref)
        ledger.settle(processor)
    assert ledger.result("r1")["status"] == "ACCEPTED"
    assert ledger.result("r2")["reason"] == "already_reversed"
    past = ReverseRef(entry.event_id, ref.partition, ref.offset + 100)
    ledger.send(reverse("r3", entry), past)
    ledger.settle(processor)
    assert ledger.result("r3")["reason"] == "not_reversible"
    assert ledger.balances() == {USER: 0}


def test_a_reversal_whose_event_cannot_be_read_yet_is_decided_later_not_refused(
    ledger: Ledger, processor: CommandProcessor
) -> None:
    """Mid-failover the journal may not answer for seconds: refusing the reversal then as
    not_reversible would be final (its outcome is kept), so the batch waits and retries."""
    entry, ref = earned_event(ledger, processor)
    journal = processor.ports.journal
    assert isinstance(journal, InMemoryJournalLookup)
    journal.unreadable(times=2)
    ledger.send(reverse("r1", entry), ref)
    ledger.settle(processor)
    assert processor.stats.aborts == 2
    assert len(ledger.results("r1")) == 1 and ledger.result("r1")["status"] == "ACCEPTED"
    assert ledger.balances() == {USER: 0}


def test_a_record_whose_handling_fails_is_dead_lettered_alone(
    ledger: Ledger, processor: CommandProcessor
) -> None:
    def failing(topic: str, value: bytes | None) -> Exception | None:
        boom = topic.endswith(".events") and value is not None and b"boom" in value
        return RuntimeError("injected failure") if boom else None

    ledger.send(open_(USER))
    ledger.settle(processor)
    sink_of(processor).fail_writes(failing)
    ids = ["e1", "boom", "e2"]
    for cid in ids:
        ledger.send(earn(cid, 1))
    ledger.settle(processor)
    assert processor.stats.aborts == 1 and processor.stats.dead_letters == 1
    assert ledger.results("boom") == []
    dead = ledger.broker.log(ledger.topic("deadletter"), partition_for(USER.encode(), PARTITIONS))
    assert dict(dead[0].headers() or [])["error"] == b"RuntimeError: injected failure"
    commands_once(ledger, "e1", "e2")


def test_a_batch_is_decided_in_milliseconds(ledger: Ledger, processor: CommandProcessor) -> None:
    """Not a benchmark: the in-memory adapters keep these tests fast."""
    ledger.send(open_(USER))
    ledger.settle(processor)
    started = time.monotonic()
    for n in range(200):
        ledger.send(earn(f"e{n}", 1))
    ledger.settle(processor)
    assert ledger.balances() == {USER: 200}
    assert time.monotonic() - started < 5

