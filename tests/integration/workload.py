"""A random command stream with awaited outcomes, and the exactly-once check over it."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field

from faults.commands import random_commands
from ledger.client import LedgerClient
from ledger.domain import Actor, Command, OpenAccount
from ledger.records import Outcome
from ledger.settings import Settings
from tests.integration.ledger_helpers import (
    journal,
    party_fold,
    snapshot_balances,
    wait_for_processor_idle,
)


@dataclass
class Workload:
    settings: Settings
    users: int = 12
    rooms: int = 4
    seed: int = 7
    sent: dict[str, Command] = field(default_factory=dict)
    futures: dict[str, Future[Outcome]] = field(default_factory=dict)
    client: LedgerClient | None = None

    def __post_init__(self) -> None:
        # One client for the whole run: its watcher resolves every future, however late.
        self.client = LedgerClient(self.settings)

    def open_accounts(self) -> None:
        client = self.client
        assert client is not None
        cmds: list[Command] = [
            OpenAccount(
                command_id=f"open-u{i}",
                actor=Actor.SYSTEM,
                reason="signup",
                account=f"user:u{i}",
                grant=500,
            )
            for i in range(self.users)
        ]
        cmds += [
            OpenAccount(
                command_id=f"open-r{i}", actor=Actor.SYSTEM, reason="room", account=f"room:r{i}"
            )
            for i in range(self.rooms)
        ]
        self._submit_all(client, cmds, rate=0)

    def stream(self, count: int, rate: float) -> threading.Thread:
        """Send `count` random commands at about `rate` per second, in a thread."""
        cmds = list(random_commands(self.seed, count, self.users, self.rooms, f"c{self.seed}"))

        def run() -> None:
            assert self.client is not None
            self._submit_all(self.client, cmds, rate)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def _submit_all(self, client: LedgerClient, cmds: list[Command], rate: float) -> None:
        started = time.monotonic()
        for n, cmd in enumerate(cmds):
            fut = client.submit(cmd, wait=True)
            assert fut is not None
            self.sent[cmd.command_id], self.futures[cmd.command_id] = cmd, fut
            if rate:
                client.poll(0)
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        client.flush(120)

    def outcomes(self, timeout: float = 120) -> dict[str, Outcome]:
        deadline = time.monotonic() + timeout
        return {
            cid: f.result(max(0.1, deadline - time.monotonic())) for cid, f in self.futures.items()
        }

    def check_exactly_once(self) -> dict[str, int]:
        """Every accepted command is in the journal exactly once; nothing else is."""
        outcomes = self.outcomes()
        # Outcomes come before the routed join credits are applied: wait for those too.
        wait_for_processor_idle(self.settings)
        entries = journal(self.settings)
        per_command = Counter(e.command_id for e in entries)
        accepted = {cid for cid, o in outcomes.items() if o.accepted}
        with_events = {cid for cid in accepted if outcomes[cid].event_ids}
        assert {cid for cid, n in per_command.items()} == with_events, "journal != accepted"
        assert all(n == 1 for n in per_command.values()), "a command was journaled twice"
        ids = Counter(e.event_id for e in entries)
        assert all(n == 1 for n in ids.values()), "an event id appears twice"
        for cid in with_events:
            assert list(outcomes[cid].event_ids) == [
                e.event_id for e in entries if e.command_id == cid
            ]
        folded = party_fold(entries)
        snapshots = snapshot_balances(self.settings)
        assert {a: b for a, b in snapshots.items() if b or a in folded} == folded
        assert all(b >= 0 for b in snapshots.values())
        assert self.client is not None
        self.client.close()
        return {"sent": len(outcomes), "accepted": len(accepted), "events": len(entries)}
