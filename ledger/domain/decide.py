"""decide(): validate one command against what its owner knows, and say what to write.

Pure: no I/O, no clock, no randomness (ids derive from command_id), so a
command retried after a crash yields the very same decision. Business
rejections are returned as `Rejected` values, never raised.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar, assert_never

from ledger.domain.accounts import (
    SYSTEM_REWARDS,
    SYSTEM_SPENT,
    AccountState,
    AccountType,
    Limits,
    Posting,
    account_type,
    is_balanced,
    is_valid_account,
    negated,
    net_changes,
)
from ledger.domain.commands import (
    ApplyCredit,
    Command,
    Earn,
    Join,
    OpenAccount,
    Reverse,
    Spend,
    credit_command_id,
)
from ledger.domain.events import (
    AccountOpened,
    CreditApplied,
    EntryReversed,
    Event,
    JournalEntry,
    PointsEarned,
    PointsGranted,
    PointsSpent,
    RoomJoined,
    entry_event_id,
)
from ledger.domain.view import LedgerView

_E = TypeVar("_E", bound=JournalEntry)


class RejectReason(StrEnum):
    INSUFFICIENT_POINTS = "insufficient_points"
    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_CLOSED = "account_closed"
    INVALID_AMOUNT = "invalid_amount"
    ACCOUNT_EXISTS = "account_exists"
    CONFLICT = "conflict"
    INVALID_ACCOUNT = "invalid_account"
    ALREADY_REVERSED = "already_reversed"
    MISROUTED = "misrouted"
    NOT_REVERSIBLE = "not_reversible"
    INVALID_COMMAND = "invalid_command"  # the record itself is unusable (e.g. reason too long)
    EXPIRED = "expired"  # issued before the deduplication window
    ALREADY_APPLIED = "already_applied"  # a routed credit that was applied before


@dataclass(frozen=True, kw_only=True)
class Accepted:
    """Events to write, credits to route to other owners, new states of owned accounts."""

    events: tuple[Event, ...]
    credits: tuple[ApplyCredit, ...] = ()
    states: tuple[AccountState, ...] = ()

    @property
    def event_ids(self) -> tuple[str, ...]:
        """Ids of the journal entries written (for the command's outcome)."""
        return tuple(e.event_id for e in self.events if isinstance(e, JournalEntry))


@dataclass(frozen=True)
class Rejected:
    reason: RejectReason
    detail: str


Decision = Accepted | Rejected


def decide(
    view: LedgerView,
    command: Command,
    *,
    now_ms: int,
    limits: Limits,
    reversed_ids: Container[str] = (),
) -> Decision:
    """Decide one command. `reversed_ids`: event ids the owner has already reversed."""
    match command:
        case OpenAccount():
            return _open_account(view, command, now_ms, limits)
        case Earn():
            return _earn(view, command, now_ms, limits)
        case Spend():
            return _spend(view, command, now_ms, limits)
        case Join():
            return _join(view, command, now_ms, limits)
        case Reverse():
            return _reverse(view, command, now_ms, reversed_ids)
        case ApplyCredit():
            return _apply_credit(view, command)
        case _:
            assert_never(command)


# --- open -------------------------------------------------------------------


def _open_account(view: LedgerView, cmd: OpenAccount, now_ms: int, limits: Limits) -> Decision:
    kind = _party_type(cmd.account)
    if kind is None:
        return Rejected(RejectReason.INVALID_ACCOUNT, f"cannot open {cmd.account!r}")
    bad = _check_opening(cmd, limits)
    if bad is not None:
        return bad
    # `known` covers an account owned elsewhere (a misrouted or repeated open).
    if view.owned(cmd.account) is not None or view.known(cmd.account):
        return Rejected(RejectReason.ACCOUNT_EXISTS, f"{cmd.account} is already open")
    opened = AccountOpened(
        account=cmd.account,
        account_type=kind,
        floor=cmd.floor,
        opened_at_ms=now_ms,
        command_id=cmd.command_id,
    )
    state = AccountState(cmd.account, kind, cmd.floor, balance=0)
    if cmd.grant == 0:
        return Accepted(events=(opened,), states=(state,))
    grant = _entry(PointsGranted, cmd, _issue(cmd.account, cmd.grant), now_ms)
    return Accepted(events=(opened, grant), states=(state.credited(cmd.grant),))


def _check_opening(cmd: OpenAccount, limits: Limits) -> Rejected | None:
    # A floor above the grant would open the account already in breach.
    if not _is_int(cmd.floor) or not -limits.max_amount <= cmd.floor <= limits.max_amount:
        return Rejected(RejectReason.INVALID_AMOUNT, f"floor {cmd.floor!r} out of range")
    if not _is_int(cmd.grant) or not 0 <= cmd.grant <= limits.max_amount:
        return Rejected(RejectReason.INVALID_AMOUNT, f"grant {cmd.grant!r} out of range")
    if cmd.grant < cmd.floor:
        return Rejected(
            RejectReason.INVALID_AMOUNT, f"grant {cmd.grant} is below the floor {cmd.floor}"
        )
    return None


# --- earn, spend, join ------------------------------------------------------


def _earn(view: LedgerView, cmd: Earn, now_ms: int, limits: Limits) -> Decision:
    state = _payable_state(view, cmd.account, cmd.amount, limits)
    if isinstance(state, Rejected):
        return state
    entry = _entry(PointsEarned, cmd, _issue(cmd.account, cmd.amount), now_ms)
    return Accepted(events=(entry,), states=(state.credited(cmd.amount),))


def _spend(view: LedgerView, cmd: Spend, now_ms: int, limits: Limits) -> Decision:
    state = _payable_state(view, cmd.account, cmd.amount, limits)
    if isinstance(state, Rejected):
        return state
    if not state.can_pay(cmd.amount):
        return _insufficient(state, cmd.amount)
    postings = (Posting(cmd.account, -cmd.amount), Posting(SYSTEM_SPENT, cmd.amount))
    entry = _entry(PointsSpent, cmd, postings, now_ms)
    return Accepted(events=(entry,), states=(state.debited(cmd.amount),))


def _join(view: LedgerView, cmd: Join, now_ms: int, limits: Limits) -> Decision:
    bad = _check_join_parties(cmd)
    if bad is not None:
        return bad
    state = _payable_state(view, cmd.user, cmd.fee, limits)
    if isinstance(state, Rejected):
        return state
    if not view.known(cmd.room):
        return Rejected(RejectReason.UNKNOWN_ACCOUNT, f"{cmd.room} is not open")
    if not state.can_pay(cmd.fee):
        return _insufficient(state, cmd.fee)
    # One entry holds both sides (atomic); the room's side reaches its owner
    # as a routed credit, so the room is never credited before the journal is.
    postings = (Posting(cmd.user, -cmd.fee), Posting(cmd.room, cmd.fee))
    entry = _entry(RoomJoined, cmd, postings, now_ms)
    credit = _credit(cmd, cmd.room, cmd.fee, entry.event_id)
    return Accepted(events=(entry,), credits=(credit,), states=(state.debited(cmd.fee),))


def _check_join_parties(cmd: Join) -> Rejected | None:
    if _party_type(cmd.user) is not AccountType.USER:
        return Rejected(RejectReason.INVALID_ACCOUNT, f"{cmd.user!r} is not a user account")
    if _party_type(cmd.room) is not AccountType.ROOM:
        return Rejected(RejectReason.INVALID_ACCOUNT, f"{cmd.room!r} is not a room account")
    return None


def _payable_state(
    view: LedgerView, account: str, amount: int, limits: Limits
) -> AccountState | Rejected:
    """The owned, open user/room state that an amount may move, or why not."""
    if _party_type(account) is None:
        return Rejected(RejectReason.INVALID_ACCOUNT, f"{account!r} is not a user or room")
    if not _valid_amount(amount, limits):
        return Rejected(
            RejectReason.INVALID_AMOUNT,
            f"amount {amount!r} must be an integer from 1 to {limits.max_amount}",
        )
    return _open_state(view, account)


def _open_state(view: LedgerView, account: str) -> AccountState | Rejected:
    state = view.owned(account)
    if state is None:
        return Rejected(RejectReason.UNKNOWN_ACCOUNT, f"{account} is not open")
    if not state.is_open:
        return Rejected(RejectReason.ACCOUNT_CLOSED, f"{account} is closed")
    return state


# --- reverse ----------------------------------------------------------------


def _reverse(
    view: LedgerView, cmd: Reverse, now_ms: int, reversed_ids: Container[str]
) -> Decision:
    deciding = cmd.deciding_account
    bad = _check_reversible(cmd.original, deciding)
    if bad is not None:
        return bad
    state = view.owned(deciding)
    if state is None:
        return Rejected(RejectReason.MISROUTED, f"{deciding} is not owned here")
    if cmd.event_id in reversed_ids:
        return Rejected(RejectReason.ALREADY_REVERSED, f"{cmd.event_id} is already reversed")
    if not state.is_open:
        return Rejected(RejectReason.ACCOUNT_CLOSED, f"{deciding} is closed")
    postings = negated(cmd.original)
    changes = net_changes(postings)
    delta = changes.get(deciding, 0)
    if delta < 0 and not state.can_pay(-delta):
        return _insufficient(state, -delta)
    entry = _entry(EntryReversed, cmd, postings, now_ms, reverses=cmd.event_id)
    credits = tuple(
        _credit(cmd, account, amount, entry.event_id)
        for account, amount in changes.items()
        if amount > 0 and account != deciding and _party_type(account) is not None
    )
    return Accepted(events=(entry,), credits=credits, states=(state.moved(delta),))


def _check_reversible(original: tuple[Posting, ...], deciding: str) -> Rejected | None:
    """The original must be a sane entry whose only user/room debit is the decider's."""
    if not original or not _sane_postings(original):
        return Rejected(RejectReason.NOT_REVERSIBLE, "original postings are empty or malformed")
    if not is_balanced(original):
        return Rejected(RejectReason.NOT_REVERSIBLE, "original postings do not balance")
    if _party_type(deciding) is None:
        return Rejected(RejectReason.NOT_REVERSIBLE, "original touches no user or room")
    # Only one owner can check a floor in one decision: more debits, no reversal.
    debited = {
        p.account for p in original if p.amount > 0 and _party_type(p.account) is not None
    }
    if debited - {deciding}:
        return Rejected(
            RejectReason.NOT_REVERSIBLE,
            f"reversal would debit several accounts: {sorted(debited)}",
        )
    return None


def _sane_postings(postings: Iterable[Posting]) -> bool:
    return all(
        isinstance(p, Posting) and is_valid_account(p.account) and _is_int(p.amount)
        for p in postings
    )


# --- apply credit -----------------------------------------------------------


def _apply_credit(view: LedgerView, cmd: ApplyCredit) -> Decision:
    # The journal already holds this credit: only a routing bug can refuse it,
    # so there is no floor, limit or open check here.
    if not _is_int(cmd.amount) or cmd.amount <= 0:
        return Rejected(RejectReason.INVALID_AMOUNT, f"credit {cmd.amount!r} must be positive")
    state = view.owned(cmd.account)
    if state is None:
        return Rejected(RejectReason.MISROUTED, f"{cmd.account} is not owned here")
    applied = CreditApplied(
        account=cmd.account, amount=cmd.amount, event_id=cmd.event_id, command_id=cmd.command_id
    )
    return Accepted(events=(applied,), states=(state.credited(cmd.amount),))


# --- helpers ----------------------------------------------------------------


def _entry(
    cls: type[_E],
    cmd: Command,
    postings: tuple[Posting, ...],
    now_ms: int,
    reverses: str | None = None,
) -> _E:
    return cls(
        event_id=entry_event_id(cmd.command_id, cmd.deciding_account),
        command_id=cmd.command_id,
        postings=postings,
        occurred_at_ms=now_ms,
        actor=cmd.actor,
        reason=cmd.reason,
        reverses_event_id=reverses,
    )


def _issue(account: str, amount: int) -> tuple[Posting, ...]:
    """Postings that issue new points from system:rewards."""
    return (Posting(SYSTEM_REWARDS, -amount), Posting(account, amount))


def _credit(cmd: Command, account: str, amount: int, event_id: str) -> ApplyCredit:
    return ApplyCredit(
        command_id=credit_command_id(event_id, account),
        actor=cmd.actor,
        reason=cmd.reason,
        account=account,
        amount=amount,
        event_id=event_id,
    )


def _insufficient(state: AccountState, amount: int) -> Rejected:
    return Rejected(
        RejectReason.INSUFFICIENT_POINTS,
        f"{state.account} has {state.balance}, floor {state.floor}: cannot pay {amount}",
    )


def _party_type(account: object) -> AccountType | None:
    """USER or ROOM for a well-formed user/room id, else None (system or malformed)."""
    if not isinstance(account, str) or not is_valid_account(account):
        return None
    kind = account_type(account)
    return None if kind is AccountType.SYSTEM else kind


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_amount(amount: object, limits: Limits) -> bool:
    if isinstance(amount, bool) or not isinstance(amount, int):
        return False
    return 0 < amount <= limits.max_amount
