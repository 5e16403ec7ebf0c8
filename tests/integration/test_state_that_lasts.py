"""Guarantees that outlive every retention: the story of a processor restarted after its
outcomes left points.results.

Results are kept 60 s here and the deduplication window is 15 s; the records that
retention would delete are deleted at once (delete_records, what retention does to old
segments). After a restart on an empty state directory, a command retried with its
original issue time is `expired`, a second reversal of an event is `already_reversed`,
and a routed credit re-produced byte for byte with its signature is refused: the room's
balance does not move.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)

from ledger.client import LedgerClient
from ledger.domain import Actor, Earn, Join, OpenAccount, Reverse
from ledger.journal import find_event, read_messages
from ledger.kafka import make_admin, make_consumer, make_producer
from ledger.settings import Settings
from ledger.wire import Codec
from tests.integration.ledger_helpers import (
    journal,
    snapshot_balances,
    start_processor,
    wait_for_processor_idle,
)
from tests.integration.observe import Observer

pytestmark = pytest.mark.integration

WINDOW_S = 15.0
USER, ROOM = "user:lasting", "room:lasting"


def _short_retention(settings: Settings) -> None:
    admin = make_admin(settings)
    entry = ConfigEntry("retention.ms", "60000",
                        incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource("topic", settings.topic("results"), incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def _retention_passed(settings: Settings) -> None:
    """Every record of points.results deleted, as retention does after its time."""
    admin = make_admin(settings)
    consumer = make_consumer(settings, None)
    topic = settings.topic("results")
    ends = [TopicPartition(topic, p, consumer.get_watermark_offsets(
        TopicPartition(topic, p), timeout=10, cached=False)[1]) for p in range(settings.partitions)]
    consumer.close()
    for future in admin.delete_records(ends).values():
        future.result(30)


def _routed_credit(settings: Settings) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """The committed APPLY_CREDIT record on points.commands: key, value, headers."""
    codec = Codec()
    found = None
    for msg in read_messages(settings, settings.topic("commands"), follow=False):
        if codec.decode_as("command", msg.value())["kind"] == "APPLY_CREDIT":
            found = (msg.key(), msg.value(), list(msg.headers() or []))
    assert found is not None, "no routed credit on the commands topic"
    return found  # type: ignore[return-value]


def _reproduce(settings: Settings, key: bytes, value: bytes,
               headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = make_producer(settings)
    producer.produce(settings.topic("commands"), key=key, value=value, headers=headers)
    assert producer.flush(10) == 0


def test_guarantees_outlive_the_results_retention(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(dedup_window_s=WINDOW_S, state_dir=tmp_path / "first")
    _short_retention(settings)
    codec = Codec()
    first = start_processor(settings, "lasting")
    client = LedgerClient(settings)
    try:
        for account, grant in ((USER, 100), (ROOM, 0)):
            assert client.send(OpenAccount(command_id=f"open-{account}", actor=Actor.SYSTEM,
                                           reason="", account=account, grant=grant)).accepted
        earn = Earn(command_id="earn-once", actor=Actor.SYSTEM, reason="", account=USER,
                    amount=7)
        earned = client.send(earn)
        assert earned.accepted
        earn_record = find_event(settings, earned.event_ids[0])
        assert client.send(Join(command_id="join-once", actor=Actor.USER, reason="", user=USER,
                                room=ROOM, fee=10)).accepted
        assert earn_record.entry is not None
        reverse = Reverse(command_id="reverse-once", actor=Actor.ADMIN, reason="",
                          event_id=earned.event_ids[0], original=earn_record.entry.postings)
        assert client.send(reverse, ref=earn_record.ref).accepted
        wait_for_processor_idle(settings)
        credit = _routed_credit(settings)
    finally:
        first.stop()
    before = snapshot_balances(settings)
    assert before == {USER: 90, ROOM: 10}

    time.sleep(WINDOW_S + 1)
    _retention_passed(settings)
    # A new machine: nothing on disk, every outcome gone from points.results.
    fresh = settings.with_(state_dir=tmp_path / "second")
    second = start_processor(fresh, "lasting")
    observer = Observer(fresh)
    try:
        # The retry of the earn, as first sent (same issue time). Results start afresh here:
        # retention took the first ones.
        original = codec.encode("command", {**_command_record(codec, settings, "earn-once")})
        _reproduce(fresh, USER.encode(), original)
        assert observer.result("earn-once")["reason"] == "expired"
        again = Reverse(command_id="reverse-twice", actor=Actor.ADMIN, reason="",
                        event_id=earned.event_ids[0], original=earn_record.entry.postings)
        assert client_send(fresh, again, earn_record.ref) == "already_reversed"
        _reproduce(fresh, *credit)
        credit_id = codec.decode_as("command", credit[1])["command_id"]
        assert observer.result(credit_id)["reason"] == "already_applied"
        wait_for_processor_idle(fresh)
    finally:
        observer.stop()
        second.stop()
    entries = journal(settings)
    assert [e.command_id for e in entries].count("earn-once") == 1
    assert [e.command_id for e in entries].count("reverse-once") == 1
    assert "reverse-twice" not in [e.command_id for e in entries]
    assert snapshot_balances(settings) == before


def _command_record(codec: Codec, settings: Settings, command_id: str) -> dict[str, object]:
    """The first command record with this id on points.commands (decoded)."""
    for msg in read_messages(settings, settings.topic("commands"), follow=False):
        rec = codec.decode_as("command", msg.value())
        if rec["command_id"] == command_id:
            return rec
    raise AssertionError(f"no command {command_id}")


def client_send(settings: Settings, command: Reverse, ref: object) -> str | None:
    client = LedgerClient(settings)
    try:
        outcome = client.send(command, ref=ref)  # type: ignore[arg-type]
        return outcome.reason
    finally:
        client.close()


def _users_on_two_partitions(settings: Settings) -> tuple[str, str]:
    from ledger.kafka import partition_for

    users = [f"user:scope{n}" for n in range(50)]
    first = users[0]
    other = next(u for u in users if partition_for(u.encode(), settings.partitions)
                 != partition_for(first.encode(), settings.partitions))
    return first, other


@pytest.mark.parametrize("order", ["first-then-second", "second-then-first"])
def test_one_command_id_for_two_users_on_two_partitions(settings: Settings, order: str) -> None:
    """Command ids are scoped per deciding account: the same id used by two users is two
    joins, each debiting its user and crediting the room; nothing is debited without its
    credit, and the journal holds two distinct events."""
    alice, bob = _users_on_two_partitions(settings)
    payers = [alice, bob] if order == "first-then-second" else [bob, alice]
    threaded = start_processor(settings, "scope")
    client = LedgerClient(settings)
    try:
        for account, grant in ((alice, 50), (bob, 50), (ROOM, 0)):
            assert client.send(OpenAccount(command_id=f"open-{account}", actor=Actor.SYSTEM,
                                           reason="", account=account, grant=grant)).accepted
        outcomes = [client.send(Join(command_id="same-id", actor=Actor.USER, reason="",
                                     user=user, room=ROOM, fee=10)) for user in payers]
        wait_for_processor_idle(settings)
    finally:
        client.close()
        threaded.stop()
    assert all(o.accepted for o in outcomes)
    assert outcomes[0].event_ids != outcomes[1].event_ids
    joins = [e for e in journal(settings) if e.command_id == "same-id"]
    assert len({e.event_id for e in joins}) == 2
    assert snapshot_balances(settings) == {alice: 40, bob: 40, ROOM: 20}
