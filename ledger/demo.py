"""The study-room app, played end to end against the ledger (`ledger demo`).

Users sign up (with a welcome grant) and rooms are created; verified study
sessions earn points; users join rooms paying fees, and some joins are refused
for lack of points; rooms spend what they collected; a few sessions are
revoked, which reverses their earn events.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from ledger.client import LedgerClient
from ledger.credits import ensure_key_file
from ledger.domain import Actor, Command, Earn, Join, OpenAccount, Reverse, Spend
from ledger.journal import find_events
from ledger.records import Outcome, ReverseRef
from ledger.settings import Settings
from ledger.wiring import credit_key_of

Progress = Callable[[str, int, int], None]
# One of docs/analysts.md's ten questions (verbatim: a test holds it there), asked of the
# snapshot the demo ends with.
ANALYST_QUESTION = "Which rooms collected the most in join fees last week?"
ANALYST_SQL = """WITH latest AS (SELECT max(occurred_at) AS at FROM audit_log)
SELECT a.account AS room, sum(a.amount) AS fees, count(*) AS joins
FROM audit_log a, latest
WHERE a.kind = 'JOINED' AND a.account LIKE 'room:%'
  AND a.occurred_at > latest.at - INTERVAL '7 days'
GROUP BY a.account
ORDER BY fees DESC, room
LIMIT 10;"""


@dataclass(frozen=True)
class DemoSize:
    users: int = 300
    rooms: int = 30
    sessions: int = 6000
    joins: int = 3000
    room_spends: int = 600
    reversals: int = 20
    seed: int = 42


@dataclass
class DemoResult:
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def events(self) -> int:
        """Journal events the accepted commands wrote."""
        return sum(len(o.event_ids) for o in self.outcomes.values() if o.accepted)

    def counts(self) -> dict[str, Counter[str]]:
        """Per command kind: accepted and each rejection reason."""
        out: dict[str, Counter[str]] = {}
        for cid, outcome in self.outcomes.items():
            status = "accepted" if outcome.accepted else f"rejected:{outcome.reason}"
            out.setdefault(self.kinds[cid], Counter())[status] += 1
        return out


def processor_credit_key(settings: Settings, work: Path) -> str:
    """The key the demo's processor signs routed credits with: LEDGER_CREDIT_KEY or the dev
    stack's, else the demo's own, made once in its work directory (mode 600) so credits a
    stopped demo left in flight still verify the next time."""
    return credit_key_of(settings) or ensure_key_file(work / "credit.key")


class StudyRoomApp:
    def __init__(
        self, settings: Settings, size: DemoSize, client: LedgerClient, progress: Progress
    ) -> None:
        self.settings, self.size, self.client, self.progress = settings, size, client, progress
        self.rng = random.Random(size.seed)
        self.result = DemoResult()
        self.run_id = f"demo{int(time.time())}"
        self._refs: dict[str, ReverseRef] = {}

    def play(self) -> DemoResult:
        started = time.monotonic()
        self._phase("sign-ups and rooms", self._signups())
        self._phase("verified study sessions and room joins", self._activity())
        self._phase("rooms spending what they collected", self._room_spending())
        self._phase("revoked sessions (reversals)", self._reversals())
        self.result.seconds = time.monotonic() - started
        return self.result

    def _cid(self, kind: str, n: int) -> str:
        return f"{self.run_id}-{kind}-{n}"

    def _signups(self) -> list[Command]:
        users = [
            OpenAccount(
                command_id=self._cid("signup", i),
                actor=Actor.SYSTEM,
                reason="signed up: welcome bonus",
                account=f"user:u{i}",
                grant=50,
            )
            for i in range(self.size.users)
        ]
        rooms = [
            OpenAccount(
                command_id=self._cid("room", i),
                actor=Actor.USER,
                reason="study room created",
                account=f"room:r{i}",
            )
            for i in range(self.size.rooms)
        ]
        return [*users, *rooms]

    def _activity(self) -> list[Command]:
        s, rng = self.size, self.rng
        cmds: list[Command] = []
        for i in range(s.sessions):
            cmds.append(
                Earn(
                    command_id=self._cid("study", i),
                    actor=Actor.SYSTEM,
                    reason="study session verified",
                    account=self._user(),
                    amount=rng.randint(5, 30),
                )
            )
        for i in range(s.joins):
            cmds.append(
                Join(
                    command_id=self._cid("join", i),
                    actor=Actor.USER,
                    reason="joined study room",
                    user=self._user(),
                    room=self._room(),
                    fee=rng.choice((20, 40, 80, 150)),
                )
            )
        rng.shuffle(cmds)
        return cmds

    def _room_spending(self) -> list[Command]:
        # After the joins: a room spends credits that its owner has applied by now.
        return [
            Spend(
                command_id=self._cid("roomspend", i),
                actor=Actor.ADMIN,
                reason="room bought study material",
                account=self._room(),
                amount=self.rng.randint(10, 120),
            )
            for i in range(self.size.room_spends)
        ]

    def _reversals(self) -> list[Command]:
        earned = [
            cid
            for cid, kind in self.result.kinds.items()
            if kind == "Earn" and self.result.outcomes[cid].accepted
        ]
        chosen = self.rng.sample(earned, min(self.size.reversals, len(earned)))
        event_ids = {self.result.outcomes[cid].event_ids[0] for cid in chosen}
        records = find_events(self.settings, event_ids)
        cmds: list[Command] = []
        for n, (event_id, record) in enumerate(sorted(records.items())):
            assert record.entry is not None
            cmd = Reverse(
                command_id=self._cid("revoke", n),
                actor=Actor.ADMIN,
                reason="study session verification revoked",
                event_id=event_id,
                original=record.entry.postings,
            )
            self._refs[cmd.command_id] = record.ref
            cmds.append(cmd)
        return cmds

    def _user(self) -> str:
        return f"user:u{self.rng.randrange(self.size.users)}"

    def _room(self) -> str:
        return f"room:r{self.rng.randrange(self.size.rooms)}"

    def _phase(self, name: str, cmds: list[Command]) -> None:
        futures: list[tuple[Command, Future[Outcome]]] = []
        for cmd in cmds:
            fut = self.client.submit(cmd, self._refs.get(cmd.command_id), wait=True)
            assert fut is not None
            futures.append((cmd, fut))
            self.result.kinds[cmd.command_id] = type(cmd).__name__
        self.client.flush(60)
        for done, (cmd, fut) in enumerate(futures, 1):
            self.result.outcomes[cmd.command_id] = self.client.result(cmd.command_id, fut, 120)
            if done % 500 == 0 or done == len(futures):
                self.progress(name, done, len(futures))
