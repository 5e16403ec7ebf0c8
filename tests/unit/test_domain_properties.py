"""Invariants of decide() over random command sequences (hypothesis).

A small simulated cluster: one or more owners (InMemoryView), commands routed
by their deciding account, credits either applied at once or held in flight
and delivered in random order, as the processor does across partitions.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

from hypothesis import event as note_event
from hypothesis import given, settings, target
from hypothesis import strategies as st

from ledger.domain import (
    SYSTEM_REWARDS,
    Accepted,
    AccountOpened,
    Actor,
    ApplyCredit,
    Command,
    Decision,
    Earn,
    EntryReversed,
    InMemoryView,
    Join,
    JournalEntry,
    Limits,
    OpenAccount,
    Rejected,
    RejectReason,
    Reverse,
    Spend,
    account_type,
    decide,
    fold_balances,
    is_balanced,
    is_system,
    parse_account,
    payload_fingerprint,
)

LIMITS = Limits(max_amount=1000)
USERS = ["user:u0", "user:u1", "user:u2"]
ROOMS = ["room:r0", "room:r1"]
PARTIES = USERS + ROOMS
# Targets include ones that must always be refused; "user:stranger" is never opened.
UNOPENABLE = [SYSTEM_REWARDS, "user:bad id", "room:" + "x" * 65]
BAD_TARGETS = ["user:stranger", *UNOPENABLE]  # never opened


def mostly(valid: list[str], bad: list[str] = BAD_TARGETS) -> st.SearchStrategy[str]:
    """Usually a valid target, now and then a refusable one."""
    return st.sampled_from(valid * 4 + bad)


# Mostly valid amounts, small enough to pass floors often, and a few invalid ones.
amounts = st.integers(-3, 120).map(lambda n: {-3: 0, -2: -1, -1: 1001, 0: 1000}.get(n, n))
floors = st.sampled_from([-50, 0, 10])


@dataclass
class Cluster:
    owners: int
    delay_credits: bool
    views: list[InMemoryView] = field(default_factory=list)
    journal: list[JournalEntry] = field(default_factory=list)
    reversed_ids: set[str] = field(default_factory=set)
    in_flight: list[ApplyCredit] = field(default_factory=list)
    now_ms: int = 1_700_000_000_000

    def __post_init__(self) -> None:
        self.views = [InMemoryView() for _ in range(self.owners)]

    def owner(self, account: str) -> InMemoryView:
        # The same stable hash for every producer: one owner per account.
        return self.views[zlib.crc32(account.encode()) % self.owners]

    def submit(self, command: Command) -> Decision:
        self.now_ms += 1
        view = self.owner(command.deciding_account)
        decision = decide(
            view, command, now_ms=self.now_ms, limits=LIMITS, reversed_ids=self.reversed_ids
        )
        if isinstance(decision, Accepted):
            self._commit(view, decision)
        return decision

    def _commit(self, view: InMemoryView, accepted: Accepted) -> None:
        view.apply(accepted)
        for event in accepted.events:
            if isinstance(event, AccountOpened):
                for other in self.views:  # the global accounts table
                    other.add_known(event.account)
            if isinstance(event, JournalEntry):
                self.journal.append(event)
            if isinstance(event, EntryReversed) and event.reverses_event_id:
                self.reversed_ids.add(event.reverses_event_id)
        self.in_flight.extend(accepted.credits)
        if not self.delay_credits:
            self.drain()

    def deliver(self, index: int) -> None:
        credit = self.in_flight.pop(index % len(self.in_flight))
        decision = self.submit(credit)
        assert isinstance(decision, Accepted), decision  # a routed credit always lands

    def drain(self) -> None:
        while self.in_flight:
            self.deliver(0)

    def balance(self, account: str) -> int | None:
        state = self.owner(account).owned(account)
        return None if state is None else state.balance


def opening(cid: str, account: str, floor: int, grant: int) -> OpenAccount:
    return OpenAccount(
        command_id=cid, actor=Actor.ADMIN, reason="open", account=account, floor=floor, grant=grant
    )


OPS: dict[str, st.SearchStrategy[tuple[object, ...]]] = {
    "open": st.tuples(st.just("open"), mostly(PARTIES, UNOPENABLE), floors, st.integers(-5, 300)),
    "earn": st.tuples(st.just("earn"), mostly(PARTIES), amounts),
    "spend": st.tuples(st.just("spend"), mostly(PARTIES), amounts),
    # A room as the user (or a user as the room) must be refused too.
    "join": st.tuples(st.just("join"), mostly(USERS, [*BAD_TARGETS, ROOMS[0]]),
                      mostly(ROOMS, [*BAD_TARGETS, USERS[0]]), amounts),
    "reverse": st.tuples(st.just("reverse"), st.integers(0, 10_000)),
    "deliver": st.tuples(st.just("deliver"), st.integers(0, 10_000)),
}
KINDS = ["open", "earn", "earn", "spend", "spend", "join", "join", "join", "reverse", "deliver"]
ops = st.sampled_from(KINDS).flatmap(OPS.__getitem__)
# Every user and room is opened first (random floor and grant); ops may try again.
openings = st.tuples(
    *(st.tuples(st.just(account), floors, st.integers(0, 200)) for account in PARTIES)
).map(list)


def build(cluster: Cluster, cid: str, op: tuple[object, ...]) -> Command | None:
    """Turn a drawn op into a command (None: nothing to do in this state)."""
    kind, *args = op
    if kind == "open":
        account, floor, grant = args
        return opening(cid, str(account), int(floor), int(grant))  # type: ignore[call-overload]
    if kind in ("earn", "spend"):
        cls = Earn if kind == "earn" else Spend
        return cls(command_id=cid, actor=Actor.USER, reason=kind, account=str(args[0]),
                   amount=int(args[1]))  # type: ignore[call-overload]
    if kind == "join":
        return Join(command_id=cid, actor=Actor.USER, reason="join", user=str(args[0]),
                    room=str(args[1]), fee=int(args[2]))  # type: ignore[call-overload]
    if kind == "reverse" and cluster.journal:
        target = cluster.journal[int(args[0]) % len(cluster.journal)]  # type: ignore[call-overload]
        return Reverse(command_id=cid, actor=Actor.ADMIN, reason="undo",
                       event_id=target.event_id, original=target.postings)
    if kind == "deliver" and cluster.in_flight:
        cluster.deliver(int(args[0]))  # type: ignore[call-overload]
    return None


def usable(cluster: Cluster, account: str, amount: int) -> bool:
    """Reference rule: an owned, open user/room and a valid amount."""
    state = cluster.owner(account).owned(account) if account in PARTIES else None
    return state is not None and state.is_open and 0 < amount <= LIMITS.max_amount


def can_pay(cluster: Cluster, account: str, amount: int) -> bool:
    """Reference rule for debits: usable, and the floor kept."""
    state = cluster.owner(account).owned(account)
    return (
        usable(cluster, account, amount)
        and state is not None
        and state.balance - amount >= state.floor
    )


def expected(cluster: Cluster, command: Command) -> bool | None:
    """Whether a simple reference model accepts the command (None: not modelled)."""
    match command:
        case Earn():
            return usable(cluster, command.account, command.amount)
        case Spend():
            return can_pay(cluster, command.account, command.amount)
        case Join():
            room_open = command.room in ROOMS and cluster.owner(command.user).known(command.room)
            return command.user in USERS and room_open and can_pay(
                cluster, command.user, command.fee
            )
        case OpenAccount():
            fresh = not cluster.owner(command.account).known(command.account)
            grant_ok = 0 <= command.grant <= LIMITS.max_amount and command.floor <= command.grant
            return command.account in PARTIES and fresh and grant_ok
        case Reverse() if command.event_id in cluster.reversed_ids:
            return False  # a second reversal of the same entry
        case _:
            return None


def check_invariants(cluster: Cluster) -> None:
    journal_balances = fold_balances(cluster.journal)
    for entry in cluster.journal:
        assert is_balanced(entry.postings), entry
    assert sum(journal_balances.values()) == 0
    assert len({e.event_id for e in cluster.journal}) == len(cluster.journal)
    pending: dict[str, int] = {}
    for credit in cluster.in_flight:
        pending[credit.account] = pending.get(credit.account, 0) + credit.amount
    tracked = 0
    for view in cluster.views:
        for account, state in view.states().items():
            assert not is_system(account)
            assert state.balance >= state.floor, state
            # Never higher than the journal: credits in flight are all that differ.
            owed = pending.get(account, 0)
            assert owed >= 0
            assert state.balance + owed == journal_balances.get(account, 0), (state, owed)
            tracked += state.balance + owed
    system_total = sum(v for a, v in journal_balances.items() if is_system(a))
    assert tracked + system_total == 0


def step(cluster: Cluster, command: Command) -> Decision:
    """Submit one command and check it against the reference model."""
    want = expected(cluster, command)
    before = {a: cluster.balance(a) for a in PARTIES}
    decision = cluster.submit(command)
    if want is not None:
        assert isinstance(decision, Accepted) == want, (command, decision)
    if isinstance(decision, Rejected):
        assert {a: cluster.balance(a) for a in PARTIES} == before
    return decision


def play(
    cluster: Cluster, initial: list[tuple[str, int, int]], steps: list[tuple[object, ...]]
) -> int:
    """Open the initial accounts, play each op, check after every step; count acceptances."""
    accepted = 0
    for i, (account, floor, grant) in enumerate(initial):
        decision = step(cluster, opening(f"init{i}", account, floor, max(grant, floor)))
        accepted += isinstance(decision, Accepted)
        check_invariants(cluster)
    for i, op in enumerate(steps):
        command = build(cluster, f"c{i}", op)
        if command is not None:
            accepted += isinstance(step(cluster, command), Accepted)
        check_invariants(cluster)
    cluster.drain()
    check_invariants(cluster)
    assert not cluster.in_flight
    return accepted


def report(cluster: Cluster) -> None:
    """Steer generation towards busy runs, and show how busy they were."""
    target(float(len(cluster.journal)), label="journal entries")
    note_event(f"journal entries >= {min(len(cluster.journal) // 10 * 10, 40)}")


@settings(max_examples=200, deadline=None)
@given(openings, st.lists(ops, min_size=10, max_size=100))
def test_one_owner_credits_applied_at_once(
    initial: list[tuple[str, int, int]], steps: list[tuple[object, ...]]
) -> None:
    cluster = Cluster(owners=1, delay_credits=False)
    play(cluster, initial, steps)
    report(cluster)


@settings(max_examples=200, deadline=None)
@given(openings, st.lists(ops, min_size=10, max_size=100), st.integers(2, 4))
def test_many_owners_credits_in_flight(
    initial: list[tuple[str, int, int]], steps: list[tuple[object, ...]], owners: int
) -> None:
    cluster = Cluster(owners=owners, delay_credits=True)
    play(cluster, initial, steps)
    report(cluster)


def test_room_cannot_spend_a_credit_still_in_flight() -> None:
    # Two owners, user and room on different ones (the cross-partition case).
    cluster = Cluster(owners=2, delay_credits=True)
    user, room = "user:u0", "room:r0"
    assert cluster.owner(user) is not cluster.owner(room)
    step(cluster, opening("o1", user, 0, 50))
    step(cluster, opening("o2", room, 0, 0))
    assert isinstance(step(cluster, build_join("j", user, room, 30)), Accepted)
    spend = Spend(command_id="s", actor=Actor.USER, reason="x", account=room, amount=30)
    refused = step(cluster, spend)
    assert isinstance(refused, Rejected)
    assert refused.reason is RejectReason.INSUFFICIENT_POINTS
    cluster.drain()
    assert cluster.balance(room) == 30
    assert isinstance(step(cluster, replace(spend, command_id="s2")), Accepted)
    assert cluster.balance(room) == 0
    check_invariants(cluster)


def test_a_busy_walk_accepts_and_settles() -> None:
    # A fixed sequence through play(): the checks above run on real traffic.
    walk: list[tuple[object, ...]] = [
        ("earn", "user:u0", 100),
        ("join", "user:u0", "room:r1", 30),
        ("deliver", 0),
        ("spend", "room:r1", 10),
        ("reverse", 2),  # the spend: refunds the room
        ("reverse", 1),  # the join: room pays back, user credit in flight
        ("reverse", 1),  # again: already reversed
    ]
    cluster = Cluster(owners=2, delay_credits=True)
    count = play(cluster, [("user:u0", 0, 0), ("room:r1", 0, 0)], walk)
    assert count == 5 + 2  # two openings, five entries
    assert (cluster.balance("user:u0"), cluster.balance("room:r1")) == (100, 0)
    assert len(cluster.journal) == 5
    assert cluster.reversed_ids == {cluster.journal[1].event_id, cluster.journal[2].event_id}


def build_join(cid: str, user: str, room: str, fee: int) -> Join:
    return Join(command_id=cid, actor=Actor.USER, reason="join", user=user, room=room, fee=fee)


@given(st.sampled_from(["user", "room", "system"]),
       st.text("abcXYZ019_-", min_size=1, max_size=64))
def test_parse_account_round_trips(prefix: str, ident: str) -> None:
    account = f"{prefix}:{ident}"
    assert parse_account(f" {prefix.upper()}:{ident} ") == account
    assert account_type(account).value == prefix.upper()


@given(st.text(max_size=20), st.text(max_size=20), st.integers(-10**12, 10**12))
def test_fingerprint_ignores_only_the_command_id(cid_a: str, cid_b: str, amount: int) -> None:
    earn = Earn(command_id=cid_a, actor=Actor.USER, reason="r", account="user:a", amount=amount)
    assert payload_fingerprint(earn) == payload_fingerprint(replace(earn, command_id=cid_b))
    assert payload_fingerprint(earn) != payload_fingerprint(replace(earn, amount=amount + 1))
