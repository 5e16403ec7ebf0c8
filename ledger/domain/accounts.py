"""Account ids, postings and the per-account state a processor keeps.

Stdlib only: the domain never touches Kafka, Avro or a database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ledger.errors import UsageError

SYSTEM_REWARDS = "system:rewards"
SYSTEM_SPENT = "system:spent"

# One canonical spelling per account: a lower-case prefix and a short, safe id.
_ACCOUNT_RE = re.compile(r"(user|room|system):[A-Za-z0-9_-]{1,64}")


class AccountType(StrEnum):
    USER = "USER"
    ROOM = "ROOM"
    SYSTEM = "SYSTEM"


_PREFIX_TYPES = {
    "user": AccountType.USER,
    "room": AccountType.ROOM,
    "system": AccountType.SYSTEM,
}


def is_valid_account(text: object) -> bool:
    """True for an id already in canonical form (what commands on the wire must carry)."""
    return isinstance(text, str) and _ACCOUNT_RE.fullmatch(text) is not None


def parse_account(text: str) -> str:
    """Normalise user input to a canonical id, or raise UsageError.

    Surrounding whitespace is dropped and the prefix lower-cased; the id part
    is case-sensitive and kept as typed.
    """
    if not isinstance(text, str):
        raise UsageError(f"account must be a string, got {type(text).__name__}")
    prefix, sep, rest = text.strip().partition(":")
    candidate = f"{prefix.lower()}{sep}{rest}"
    if not is_valid_account(candidate):
        raise UsageError(
            f"bad account {text!r}: expected user:<id>, room:<id> or system:<name>, "
            "with an id of 1 to 64 characters from [A-Za-z0-9_-]"
        )
    return candidate


def account_type(account: str) -> AccountType:
    """The type named by a canonical id's prefix; UsageError if malformed."""
    if not is_valid_account(account):
        raise UsageError(f"bad account {account!r}")
    return _PREFIX_TYPES[account.partition(":")[0]]


def is_system(account: str) -> bool:
    return account_type(account) is AccountType.SYSTEM


@dataclass(frozen=True)
class Posting:
    """One side of a journal entry: positive credits the account, negative debits it."""

    account: str
    amount: int


def is_balanced(postings: Iterable[Posting]) -> bool:
    return sum(p.amount for p in postings) == 0


def net_changes(postings: Iterable[Posting]) -> dict[str, int]:
    """Net amount per account, in order of first appearance."""
    totals: dict[str, int] = {}
    for posting in postings:
        totals[posting.account] = totals.get(posting.account, 0) + posting.amount
    return totals


def negated(postings: Iterable[Posting]) -> tuple[Posting, ...]:
    """The postings that undo the given ones (a reversal)."""
    return tuple(Posting(p.account, -p.amount) for p in postings)


@dataclass(frozen=True)
class AccountState:
    """What the owning processor knows about one user or room account."""

    account: str
    account_type: AccountType
    floor: int
    balance: int
    is_open: bool = True

    def credited(self, amount: int) -> AccountState:
        return self.moved(amount)

    def debited(self, amount: int) -> AccountState:
        return self.moved(-amount)

    def moved(self, delta: int) -> AccountState:
        """Apply a signed net change (a posting amount)."""
        # Built directly: dataclasses.replace() inspects the fields on every call.
        return AccountState(
            self.account, self.account_type, self.floor, self.balance + delta, self.is_open
        )

    def can_pay(self, amount: int) -> bool:
        """Whether a debit of `amount` keeps the balance at or above the floor."""
        return self.balance - amount >= self.floor


@dataclass(frozen=True)
class Limits:
    """Configured bounds on what one command may move."""

    max_amount: int

    def __post_init__(self) -> None:
        # A misconfiguration, not a business rejection: fail loudly at start-up.
        if isinstance(self.max_amount, bool) or not isinstance(self.max_amount, int):
            raise UsageError("max_amount must be an integer")
        if self.max_amount <= 0:
            raise UsageError("max_amount must be positive")
