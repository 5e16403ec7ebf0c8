"""Rules of the domain, one table row per rule and outcome."""

from __future__ import annotations

import ast
import sys
import uuid
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.domain import (
    LEDGER_NAMESPACE,
    SYSTEM_REWARDS,
    SYSTEM_SPENT,
    Accepted,
    AccountOpened,
    AccountState,
    AccountType,
    Actor,
    ApplyCredit,
    Command,
    CreditApplied,
    Decision,
    DedupWindow,
    Earn,
    EntryKind,
    EntryReversed,
    InMemoryView,
    Join,
    JournalEntry,
    Limits,
    OpenAccount,
    PointsEarned,
    PointsGranted,
    PointsSpent,
    Posting,
    Rejected,
    RejectReason,
    Reverse,
    RoomJoined,
    Spend,
    account_type,
    decide,
    entry_event_id,
    fold_balances,
    is_system,
    is_valid_account,
    issued_time,
    journal_entry,
    parse_account,
    payload_fingerprint,
)
from ledger.errors import UsageError

LIMITS = Limits(max_amount=1000)
NOW = 1_700_000_000_000
ALICE, BOB, CAROL, REMOTE = "user:alice", "user:bob", "user:carol", "user:remote"
ROOM, HOME, SHUT = "room:r1", "room:home", "room:shut"
DONE_EVENT = "already-reversed-event"


def make_view() -> InMemoryView:
    """alice 100 (floor 0), bob 5 (floor -10), carol closed, home room owned here;
    room:r1 and user:remote are open but owned by another instance."""
    return InMemoryView(
        states=[
            AccountState(ALICE, AccountType.USER, floor=0, balance=100),
            AccountState(BOB, AccountType.USER, floor=-10, balance=5),
            AccountState(CAROL, AccountType.USER, floor=0, balance=50, is_open=False),
            AccountState(HOME, AccountType.ROOM, floor=0, balance=40),
            AccountState(SHUT, AccountType.ROOM, floor=0, balance=40, is_open=False),
        ],
        known=[ROOM, REMOTE],
    )


def run(command: Command, view: InMemoryView | None = None) -> Decision:
    return decide(
        view or make_view(), command, now_ms=NOW, limits=LIMITS, reversed_ids={DONE_EVENT}
    )


def accepted(command: Command, view: InMemoryView | None = None) -> Accepted:
    decision = run(command, view)
    assert isinstance(decision, Accepted), decision
    return decision


def open_(account: str, floor: int = 0, grant: int = 0, cid: str = "c-open") -> OpenAccount:
    return OpenAccount(
        command_id=cid, actor=Actor.ADMIN, reason="signup", account=account, floor=floor,
        grant=grant,
    )


def earn(account: str, amount: object, cid: str = "c-earn") -> Earn:
    return Earn(command_id=cid, actor=Actor.SYSTEM, reason="study", account=account,
                amount=amount)  # type: ignore[arg-type]


def spend(account: str, amount: object, cid: str = "c-spend") -> Spend:
    return Spend(command_id=cid, actor=Actor.USER, reason="shop", account=account,
                 amount=amount)  # type: ignore[arg-type]


def join(user: str, room: str, fee: object, cid: str = "c-join") -> Join:
    return Join(command_id=cid, actor=Actor.USER, reason="join", user=user, room=room,
                fee=fee)  # type: ignore[arg-type]


def reverse(original: tuple[Posting, ...], event_id: str = "ev-1", cid: str = "c-rev") -> Reverse:
    return Reverse(command_id=cid, actor=Actor.ADMIN, reason="oops", event_id=event_id,
                   original=original)


def credit(account: str, amount: object, cid: str = "c-credit") -> ApplyCredit:
    return ApplyCredit(command_id=cid, actor=Actor.SYSTEM, reason="join", account=account,
                       amount=amount, event_id="ev-1")  # type: ignore[arg-type]


EARNED_BY_ALICE = (Posting(SYSTEM_REWARDS, -30), Posting(ALICE, 30))
JOIN_ALICE_HOME = (Posting(ALICE, -20), Posting(HOME, 20))
JOIN_ALICE_REMOTE_ROOM = (Posting(ALICE, -20), Posting(ROOM, 20))

REJECTIONS: list[tuple[str, Command, RejectReason]] = [
    # open
    ("open exists owned", open_(ALICE), RejectReason.ACCOUNT_EXISTS),
    ("open exists elsewhere", open_(ROOM), RejectReason.ACCOUNT_EXISTS),
    ("open system", open_(SYSTEM_REWARDS), RejectReason.INVALID_ACCOUNT),
    ("open malformed", open_("user:bad id"), RejectReason.INVALID_ACCOUNT),
    ("open grant negative", open_("user:new", grant=-1), RejectReason.INVALID_AMOUNT),
    ("open grant over max", open_("user:new", grant=1001), RejectReason.INVALID_AMOUNT),
    ("open grant below floor", open_("user:new", floor=10, grant=5), RejectReason.INVALID_AMOUNT),
    ("open floor below -max", open_("user:new", floor=-1001), RejectReason.INVALID_AMOUNT),
    ("open floor bool", open_("user:new", floor=True), RejectReason.INVALID_AMOUNT),
    # earn
    ("earn zero", earn(ALICE, 0), RejectReason.INVALID_AMOUNT),
    ("earn negative", earn(ALICE, -5), RejectReason.INVALID_AMOUNT),
    ("earn over max", earn(ALICE, 1001), RejectReason.INVALID_AMOUNT),
    ("earn bool", earn(ALICE, True), RejectReason.INVALID_AMOUNT),
    ("earn float", earn(ALICE, 5.0), RejectReason.INVALID_AMOUNT),
    ("earn unknown", earn("user:ghost", 5), RejectReason.UNKNOWN_ACCOUNT),
    ("earn not owned here", earn(REMOTE, 5), RejectReason.UNKNOWN_ACCOUNT),
    ("earn closed", earn(CAROL, 5), RejectReason.ACCOUNT_CLOSED),
    ("earn system", earn(SYSTEM_REWARDS, 5), RejectReason.INVALID_ACCOUNT),
    ("earn malformed", earn("alice", 5), RejectReason.INVALID_ACCOUNT),
    # spend
    ("spend over balance", spend(ALICE, 101), RejectReason.INSUFFICIENT_POINTS),
    ("spend past negative floor", spend(BOB, 16), RejectReason.INSUFFICIENT_POINTS),
    ("spend zero", spend(ALICE, 0), RejectReason.INVALID_AMOUNT),
    ("spend over max", spend(ALICE, 1001), RejectReason.INVALID_AMOUNT),
    ("spend unknown", spend("room:ghost", 1), RejectReason.UNKNOWN_ACCOUNT),
    ("spend closed", spend(CAROL, 1), RejectReason.ACCOUNT_CLOSED),
    ("spend system", spend(SYSTEM_SPENT, 1), RejectReason.INVALID_ACCOUNT),
    # join
    ("join fee over balance", join(ALICE, ROOM, 101), RejectReason.INSUFFICIENT_POINTS),
    ("join fee zero", join(ALICE, ROOM, 0), RejectReason.INVALID_AMOUNT),
    ("join fee over max", join(ALICE, ROOM, 1001), RejectReason.INVALID_AMOUNT),
    ("join unknown room", join(ALICE, "room:ghost", 5), RejectReason.UNKNOWN_ACCOUNT),
    ("join unknown user", join("user:ghost", ROOM, 5), RejectReason.UNKNOWN_ACCOUNT),
    ("join user not owned", join(REMOTE, ROOM, 5), RejectReason.UNKNOWN_ACCOUNT),
    ("join closed user", join(CAROL, ROOM, 5), RejectReason.ACCOUNT_CLOSED),
    ("join room is a user", join(ALICE, BOB, 5), RejectReason.INVALID_ACCOUNT),
    ("join user is a room", join(HOME, ROOM, 5), RejectReason.INVALID_ACCOUNT),
    ("join room is system", join(ALICE, SYSTEM_SPENT, 5), RejectReason.INVALID_ACCOUNT),
    # reverse
    ("reverse empty", reverse(()), RejectReason.NOT_REVERSIBLE),
    ("reverse unbalanced", reverse((Posting(ALICE, 5),)), RejectReason.NOT_REVERSIBLE),
    (
        "reverse system only",
        reverse((Posting(SYSTEM_REWARDS, -5), Posting(SYSTEM_SPENT, 5))),
        RejectReason.NOT_REVERSIBLE,
    ),
    (
        "reverse malformed account",
        reverse((Posting("nope", -5), Posting(ALICE, 5))),
        RejectReason.NOT_REVERSIBLE,
    ),
    (
        "reverse debits two accounts",
        reverse((Posting(SYSTEM_REWARDS, -10), Posting(ALICE, 5), Posting(BOB, 5))),
        RejectReason.NOT_REVERSIBLE,
    ),
    (
        "reverse already reversed",
        reverse(EARNED_BY_ALICE, DONE_EVENT),
        RejectReason.ALREADY_REVERSED,
    ),
    (
        "reverse misrouted",
        reverse((Posting(ALICE, -20), Posting(ROOM, 20))),
        RejectReason.MISROUTED,
    ),
    (
        "reverse below floor",
        reverse((Posting(SYSTEM_REWARDS, -101), Posting(ALICE, 101))),
        RejectReason.INSUFFICIENT_POINTS,
    ),
    (
        "reverse on closed account",
        reverse((Posting(SYSTEM_REWARDS, -1), Posting(CAROL, 1))),
        RejectReason.ACCOUNT_CLOSED,
    ),
    # apply credit
    ("credit misrouted", credit(ROOM, 5), RejectReason.MISROUTED),
    ("credit zero", credit(HOME, 0), RejectReason.INVALID_AMOUNT),
    ("credit bool", credit(HOME, True), RejectReason.INVALID_AMOUNT),
]


@pytest.mark.parametrize(
    ("command", "reason"), [(c, r) for _, c, r in REJECTIONS], ids=[n for n, _, _ in REJECTIONS]
)
def test_rejections(command: Command, reason: RejectReason) -> None:
    view = make_view()
    before = view.states()
    decision = run(command, view)
    assert isinstance(decision, Rejected)
    assert decision.reason is reason
    assert decision.detail
    assert view.states() == before  # decide is pure


def test_reject_reason_values_are_machine_readable() -> None:
    assert {r.value for r in RejectReason} == {
        "insufficient_points", "unknown_account", "account_closed", "invalid_amount",
        "account_exists", "conflict", "invalid_account", "already_reversed", "misrouted",
        "not_reversible", "invalid_command", "expired", "already_applied",
    }


# --- accepted outcomes ------------------------------------------------------


def test_open_without_grant() -> None:
    result = accepted(open_("room:new", floor=-5))
    assert result.events == (
        AccountOpened(account="room:new", account_type=AccountType.ROOM, floor=-5,
                      opened_at_ms=NOW, command_id="c-open"),
    )
    assert result.states == (AccountState("room:new", AccountType.ROOM, -5, 0),)
    assert result.credits == ()
    assert result.event_ids == ()


def test_open_with_grant_posts_a_granted_entry() -> None:
    result = accepted(open_("user:new", floor=10, grant=70))
    opened, granted = result.events
    assert isinstance(opened, AccountOpened)
    assert granted == PointsGranted(
        event_id=entry_event_id("c-open", "user:new"), command_id="c-open",
        postings=(Posting(SYSTEM_REWARDS, -70), Posting("user:new", 70)),
        occurred_at_ms=NOW, actor=Actor.ADMIN, reason="signup",
    )
    assert granted.kind is EntryKind.GRANTED
    assert result.states == (AccountState("user:new", AccountType.USER, 10, 70),)
    assert result.event_ids == (entry_event_id("c-open", "user:new"),)


def test_earn() -> None:
    result = accepted(earn(ALICE, 1000))
    (entry,) = result.events
    assert isinstance(entry, PointsEarned)
    assert entry.postings == (Posting(SYSTEM_REWARDS, -1000), Posting(ALICE, 1000))
    assert (entry.actor, entry.reason, entry.occurred_at_ms) == (Actor.SYSTEM, "study", NOW)
    assert entry.reverses_event_id is None
    assert result.states == (AccountState(ALICE, AccountType.USER, 0, 1100),)


@pytest.mark.parametrize(("account", "amount", "left"), [(ALICE, 100, 0), (BOB, 15, -10)])
def test_spend_down_to_the_floor(account: str, amount: int, left: int) -> None:
    result = accepted(spend(account, amount))
    (entry,) = result.events
    assert isinstance(entry, PointsSpent)
    assert entry.postings == (Posting(account, -amount), Posting(SYSTEM_SPENT, amount))
    assert [s.balance for s in result.states] == [left]


def test_join_writes_one_entry_and_routes_the_room_credit() -> None:
    result = accepted(join(ALICE, ROOM, 30))
    (entry,) = result.events
    assert isinstance(entry, RoomJoined)
    assert entry.postings == (Posting(ALICE, -30), Posting(ROOM, 30))
    event_id = entry_event_id("c-join", ALICE)
    assert result.credits == (
        ApplyCredit(command_id=f"credit:{event_id}:{ROOM}", actor=Actor.USER, reason="join",
                    account=ROOM, amount=30, event_id=event_id),
    )
    # Only the user's state changes here: the room's owner applies the credit.
    assert result.states == (AccountState(ALICE, AccountType.USER, 0, 70),)


def test_join_routes_credit_even_when_room_is_owned_here() -> None:
    result = accepted(join(ALICE, HOME, 30))
    assert [c.account for c in result.credits] == [HOME]
    assert [s.account for s in result.states] == [ALICE]


def test_reverse_earn_debits_the_earner() -> None:
    result = accepted(reverse(EARNED_BY_ALICE))
    (entry,) = result.events
    assert isinstance(entry, EntryReversed)
    assert entry.kind is EntryKind.REVERSED
    assert entry.reverses_event_id == "ev-1"
    assert entry.postings == (Posting(SYSTEM_REWARDS, 30), Posting(ALICE, -30))
    assert result.states == (AccountState(ALICE, AccountType.USER, 0, 70),)
    assert result.credits == ()


def test_reverse_spend_refunds_without_routing() -> None:
    result = accepted(reverse((Posting(BOB, -7), Posting(SYSTEM_SPENT, 7))))
    assert result.states == (AccountState(BOB, AccountType.USER, -10, 12),)
    assert result.credits == ()


def test_reverse_join_is_decided_by_the_room_and_credits_the_user() -> None:
    command = reverse(JOIN_ALICE_HOME)
    assert command.deciding_account == HOME
    result = accepted(command)
    event_id = entry_event_id("c-rev", HOME)
    assert result.states == (AccountState(HOME, AccountType.ROOM, 0, 20),)
    assert result.credits == (
        ApplyCredit(command_id=f"credit:{event_id}:{ALICE}", actor=Actor.ADMIN, reason="oops",
                    account=ALICE, amount=20, event_id=event_id),
    )


def test_apply_credit_ignores_floor_and_closed() -> None:
    result = accepted(credit(SHUT, 5))
    assert result.events == (
        CreditApplied(account=SHUT, amount=5, event_id="ev-1", command_id="c-credit"),
    )
    assert result.states == (AccountState(SHUT, AccountType.ROOM, 0, 45, is_open=False),)
    assert result.event_ids == ()


def test_credit_above_limit_is_still_applied() -> None:
    # Limits may shrink after the journal entry was written; the credit must land.
    assert accepted(credit(HOME, 5000)).states[0].balance == 5040


# --- deciding accounts ------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "key"),
    [
        (open_("room:x"), "room:x"),
        (earn(ALICE, 1), ALICE),
        (spend(HOME, 1), HOME),
        (join(ALICE, ROOM, 1), ALICE),
        (credit(ROOM, 1), ROOM),
        (reverse(EARNED_BY_ALICE), ALICE),
        (reverse((Posting(BOB, -7), Posting(SYSTEM_SPENT, 7))), BOB),
        (reverse(JOIN_ALICE_REMOTE_ROOM), ROOM),
    ],
)
def test_deciding_account(command: Command, key: str) -> None:
    assert command.deciding_account == key


# --- ids and fingerprints -----------------------------------------------------


def test_event_ids_are_deterministic_uuid5() -> None:
    first = accepted(earn(ALICE, 5, cid="retry-me")).event_ids
    again = accepted(earn(ALICE, 5, cid="retry-me")).event_ids
    other = accepted(earn(ALICE, 5, cid="another")).event_ids
    expected = str(uuid.uuid5(LEDGER_NAMESPACE, f"{ALICE}/retry-me"))
    assert first == again == (expected,)
    assert other != first
    assert uuid.UUID(expected).version == 5


def test_one_command_id_for_two_accounts_names_two_events() -> None:
    # Command ids are scoped per deciding account: the same id used by two users is two
    # commands, whose entries (and routed credits) must not be taken for one another.
    alice = accepted(join(ALICE, ROOM, 30, cid="same"))
    bob = accepted(join(BOB, ROOM, 10, cid="same"))
    assert alice.event_ids != bob.event_ids
    assert alice.credits[0].command_id != bob.credits[0].command_id


@given(st.text(max_size=300), st.text(max_size=80))
def test_event_ids_are_uuid5_of_account_and_command_id(command_id: str, account: str) -> None:
    # entry_event_id spells uuid5 out for speed; it must stay uuid5 exactly.
    expected = str(uuid.uuid5(LEDGER_NAMESPACE, f"{account}/{command_id}"))
    assert entry_event_id(command_id, account) == expected


def test_fingerprint_ignores_command_id_only() -> None:
    base = earn(ALICE, 5, cid="a")
    assert payload_fingerprint(base) == payload_fingerprint(replace(base, command_id="b"))
    assert len(payload_fingerprint(base)) == 64


@pytest.mark.parametrize(
    "changed",
    [
        replace(earn(ALICE, 5), amount=6),
        replace(earn(ALICE, 5), account=BOB),
        replace(earn(ALICE, 5), reason="other"),
        replace(earn(ALICE, 5), actor=Actor.ADMIN),
        replace(earn(ALICE, 5), amount=True),
        spend(ALICE, 5, cid="c-earn"),  # same fields, other command type
    ],
)
def test_fingerprint_changes_with_payload(changed: Command) -> None:
    assert payload_fingerprint(changed) != payload_fingerprint(earn(ALICE, 5))


def test_fingerprint_of_reverse_covers_postings() -> None:
    one = reverse(EARNED_BY_ALICE)
    two = reverse((Posting(SYSTEM_REWARDS, -31), Posting(ALICE, 31)))
    assert payload_fingerprint(one) != payload_fingerprint(two)
    assert payload_fingerprint(one) == payload_fingerprint(reverse(EARNED_BY_ALICE, cid="x"))


# --- accounts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user:alice", "user:alice"),
        ("  room:R-1_x ", "room:R-1_x"),
        ("User:Alice", "user:Alice"),
        ("system:rewards", "system:rewards"),
        ("user:" + "a" * 64, "user:" + "a" * 64),
        ("room:1", "room:1"),
    ],
)
def test_parse_account_accepts(text: str, expected: str) -> None:
    assert parse_account(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "user:", "user:" + "a" * 65, "user:al ice", "user:al.ice", "user:é", "bank:alice",
     "alice", ":alice", "user:a:b", "user:ali\nce"],
)
def test_parse_account_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_account(text)


def test_is_valid_account_wants_canonical_form() -> None:
    assert is_valid_account("user:alice")
    assert not is_valid_account("user:alice\n")
    assert not is_valid_account(" user:alice")
    assert not is_valid_account("USER:alice")
    assert not is_valid_account(42)


def test_account_types() -> None:
    assert account_type("user:a") is AccountType.USER
    assert account_type("room:a") is AccountType.ROOM
    assert account_type(SYSTEM_SPENT) is AccountType.SYSTEM
    assert is_system(SYSTEM_REWARDS) and not is_system("room:a")
    with pytest.raises(UsageError):
        account_type("nope")


# --- events -------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(EntryKind))
def test_journal_entry_builds_the_subclass_for_a_kind(kind: EntryKind) -> None:
    entry = journal_entry(
        kind.value, event_id="e", command_id="c", postings=(), occurred_at_ms=1,
        actor=Actor.USER, reason="r",
    )
    assert entry.kind is kind
    assert isinstance(entry, JournalEntry)
    assert type(entry).__name__ in {
        "PointsGranted", "PointsEarned", "PointsSpent", "RoomJoined", "EntryReversed"
    }


def test_base_journal_entry_cannot_be_built() -> None:
    with pytest.raises(TypeError):
        JournalEntry(event_id="e", command_id="c", postings=(), occurred_at_ms=1,
                     actor=Actor.USER, reason="r")


def test_events_and_commands_are_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        earn(ALICE, 1).amount = 2  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        Posting(ALICE, 1).amount = 2  # type: ignore[misc]


def test_fold_balances() -> None:
    entries = [accepted(earn(ALICE, 5)).events[0], accepted(join(ALICE, ROOM, 3)).events[0]]
    assert fold_balances(e for e in entries if isinstance(e, JournalEntry)) == {
        SYSTEM_REWARDS: -5, ALICE: 2, ROOM: 3,
    }


def test_in_memory_view_apply_and_forget() -> None:
    view = InMemoryView()
    view.apply(accepted(open_("room:z", grant=9), view))
    assert view.known("room:z")
    assert view.owned("room:z") == AccountState("room:z", AccountType.ROOM, 0, 9)
    view.forget("room:z")
    assert view.owned("room:z") is None and view.known("room:z")


def test_domain_imports_only_stdlib_and_errors() -> None:
    allowed_roots = {"ledger"}
    stdlib = set(sys.stdlib_module_names)
    domain = Path(__file__).resolve().parents[2] / "ledger" / "domain"
    for module in domain.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                assert root in stdlib or root in allowed_roots, (module.name, name)
                if root == "ledger":
                    assert name.startswith(("ledger.domain", "ledger.errors")), name


# --- the deduplication window -------------------------------------------------


def test_window_edge_is_exact() -> None:
    window = DedupWindow(length_ms=60_000)
    assert window.refusal(NOW - 60_000, NOW) is None  # issued exactly a window ago: inside
    expired = window.refusal(NOW - 60_001, NOW)
    assert expired is not None and expired.reason is RejectReason.EXPIRED


def test_window_refuses_commands_from_the_future() -> None:
    window = DedupWindow(length_ms=60_000, max_skew_ms=1000)
    assert window.refusal(NOW + 1000, NOW) is None
    ahead = window.refusal(NOW + 1001, NOW)
    assert ahead is not None and ahead.reason is RejectReason.INVALID_COMMAND


def test_an_outcome_is_kept_until_every_retry_is_expired() -> None:
    window = DedupWindow(length_ms=60_000, max_skew_ms=1000)
    decided = NOW
    issued = decided + 1000  # the latest issued time a command decided then can carry
    forget = window.forget_after(decided)
    assert window.refusal(issued, forget) is None
    assert window.refusal(issued, forget + 1) is not None


def test_uuid7_ids_carry_their_issued_time() -> None:
    ms = 1_700_000_000_123
    raw = (ms << 80) | (0x7 << 76) | (0x2 << 62) | 12345
    command_id = str(uuid.UUID(int=raw))
    assert issued_time(command_id, 5) == ms
    assert issued_time(command_id.upper(), 5) == 5  # not canonical: the field counts
    assert issued_time(str(uuid.uuid4()), 5) == 5
    assert issued_time("join-alice-math", 5) == 5
