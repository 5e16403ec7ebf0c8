"""Crashes and rebalances of the processor lose and duplicate nothing."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from ledger.client import LedgerClient
from ledger.domain import Actor, Join, OpenAccount
from ledger.kafka import partition_for
from ledger.settings import Settings
from tests.integration.ledger_helpers import (
    kill9,
    spawn_processor,
    start_processor,
    wait_for_ownership,
)
from tests.integration.workload import Workload

pytestmark = pytest.mark.integration


def test_kill9_at_random_moments_then_restart(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    proc = spawn_processor(settings, "crashy", log)
    spawned = 1
    work = Workload(settings, seed=11)
    work.open_accounts()
    stream = work.stream(count=1500, rate=300)
    rng = random.Random(2024)
    kills = 0
    try:
        while stream.is_alive() or kills < 3:
            wait_for_ownership(log, spawned)  # kill it while it works, not while it starts
            time.sleep(rng.uniform(0.1, 1.0))
            kill9(proc)
            kills += 1
            proc = spawn_processor(settings, "crashy", log)
            spawned += 1
        stream.join()
        totals = work.check_exactly_once()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert kills >= 3
    assert totals["accepted"] > 500, totals


def test_two_instances_share_partitions_through_a_rebalance(settings: Settings) -> None:
    first = start_processor(settings, "one")
    work = Workload(settings, seed=5)
    work.open_accounts()
    stream = work.stream(count=1200, rate=400)
    time.sleep(1.0)
    second = start_processor(settings, "two", expect_partitions=1)
    assert 0 < len(second.processor.group.owned) < settings.partitions
    time.sleep(1.0)
    first.stop()  # its partitions move to the second instance mid-stream
    stream.join()
    totals = work.check_exactly_once()
    second.stop()
    assert totals["sent"] == 1216


def test_sigterm_drains_and_exits_cleanly(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    proc = spawn_processor(settings, "graceful", log)
    work = Workload(settings, seed=3)
    work.open_accounts()
    stream = work.stream(count=400, rate=400)
    wait_for_ownership(log, 1)
    time.sleep(0.3)
    proc.terminate()
    assert proc.wait(timeout=30) == 0, log.read_text()[-2000:]
    proc = spawn_processor(settings, "graceful", log)
    try:
        stream.join()
        work.check_exactly_once()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "finishing the open batch" in log.read_text()


def _owned_by(settings: Settings, partitions: set[int], prefix: str) -> list[str]:
    names = (f"{prefix}{n}" for n in range(10_000))
    return [name for name in names
            if partition_for(name.encode(), settings.partitions) in partitions][:8]


def test_a_room_opened_on_another_instance_can_be_joined_at_once(settings: Settings) -> None:
    """A client opens a room (owned by one instance), sees it accepted and joins it
    from a user owned by the other instance at once: the join must not be refused as
    unknown_account because that instance's accounts table had not read the room yet."""
    first = start_processor(settings, "rooms")
    second = start_processor(settings, "users", expect_partitions=1)
    deadline = time.monotonic() + 60
    while len(first.processor.group.owned) + len(second.processor.group.owned) \
            != settings.partitions or first.processor.group.owned & second.processor.group.owned:
        assert time.monotonic() < deadline, "the two instances did not settle"
        time.sleep(0.05)
    rooms = _owned_by(settings, set(first.processor.group.owned), "room:fresh")
    users = _owned_by(settings, set(second.processor.group.owned), "user:joiner")
    client = LedgerClient(settings)
    try:
        for user in users:
            assert client.send(OpenAccount(command_id=f"open-{user}", actor=Actor.SYSTEM,
                                           reason="", account=user, grant=10)).accepted
        refused = []
        for room, user in zip(rooms, users, strict=True):
            assert client.send(OpenAccount(command_id=f"open-{room}", actor=Actor.SYSTEM,
                                           reason="", account=room)).accepted
            joined = client.send(Join(command_id=f"join-{room}", actor=Actor.USER, reason="",
                                      user=user, room=room, fee=1))
            if not joined.accepted:
                refused.append((room, joined.reason))
        assert refused == []
    finally:
        client.close()
        first.stop()
        second.stop()
