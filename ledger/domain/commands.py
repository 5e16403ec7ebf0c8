"""Commands: requests to change the ledger, named in the imperative.

Every command carries `command_id` (the idempotency key), `actor` and `reason`,
and names its `deciding_account`: the Kafka key, hence the processor that owns
the decision.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from enum import Enum, StrEnum

from ledger.domain.accounts import Posting, is_valid_account

# The deciding account of a reversal with no user or room side: any key will
# do, since it is rejected as not_reversible wherever it lands.
_FALLBACK_KEY = "system:reversals"


class Actor(StrEnum):
    SYSTEM = "SYSTEM"
    USER = "USER"
    ADMIN = "ADMIN"


@dataclass(frozen=True, kw_only=True)
class OpenAccount:
    command_id: str
    actor: Actor
    reason: str
    account: str
    floor: int = 0
    grant: int = 0

    @property
    def deciding_account(self) -> str:
        return self.account


@dataclass(frozen=True, kw_only=True)
class Earn:
    command_id: str
    actor: Actor
    reason: str
    account: str
    amount: int

    @property
    def deciding_account(self) -> str:
        return self.account


@dataclass(frozen=True, kw_only=True)
class Spend:
    command_id: str
    actor: Actor
    reason: str
    account: str
    amount: int

    @property
    def deciding_account(self) -> str:
        return self.account


@dataclass(frozen=True, kw_only=True)
class Join:
    """The user pays the room a fee; decided by the user's owner."""

    command_id: str
    actor: Actor
    reason: str
    user: str
    room: str
    fee: int

    @property
    def deciding_account(self) -> str:
        return self.user


@dataclass(frozen=True, kw_only=True)
class Reverse:
    """Undo a journal entry; `original` holds its postings, looked up by the processor."""

    command_id: str
    actor: Actor
    reason: str
    event_id: str
    original: tuple[Posting, ...]

    @property
    def deciding_account(self) -> str:
        # The reversal debits whoever the original credited; that owner must
        # check its floor, so it decides. With no debit, the first credited.
        debited = [p.account for p in self.original if p.amount > 0 and _is_party(p.account)]
        credited = [p.account for p in self.original if p.amount < 0 and _is_party(p.account)]
        for candidates in (debited, credited):
            if candidates:
                return candidates[0]
        return _FALLBACK_KEY


@dataclass(frozen=True, kw_only=True)
class ApplyCredit:
    """Internal: route the credit side of a journal entry to the credited account's owner."""

    command_id: str
    actor: Actor
    reason: str
    account: str
    amount: int
    event_id: str

    @property
    def deciding_account(self) -> str:
        return self.account


Command = OpenAccount | Earn | Spend | Join | Reverse | ApplyCredit


def credit_command_id(event_id: str, account: str) -> str:
    """Deterministic, so a retried decision routes the same credit id (deduplicated)."""
    return f"credit:{event_id}:{account}"


# Bounds on the free-text parts of a command, so that no record derived from it (journal
# event, result, routed credit) can outgrow Kafka's message size limit (about 1 MB).
MAX_COMMAND_ID_CHARS = 256
MAX_REASON_CHARS = 4096


def envelope_problem(command_id: str, reason: str) -> str | None:
    """Why a command's id or reason cannot be accepted, or None."""
    if not 0 < len(command_id) <= MAX_COMMAND_ID_CHARS:
        return (
            f"command id of {len(command_id)} characters: it must have 1 to "
            f"{MAX_COMMAND_ID_CHARS}"
        )
    if len(reason) > MAX_REASON_CHARS:
        return f"reason of {len(reason)} characters is longer than {MAX_REASON_CHARS}"
    return None


def payload_fingerprint(command: Command) -> str:
    """sha256 over every field but command_id: same id + other payload = conflict."""
    payload: dict[str, object] = {"type": type(command).__name__}
    for f in fields(command):
        if f.name != "command_id":
            payload[f.name] = _canonical(getattr(command, f.name))
    text = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=repr
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _canonical(value: object) -> object:
    """A JSON-ready form that keeps types apart (True vs 1, enum vs its string)."""
    if isinstance(value, Enum):
        return {"enum": type(value).__name__, "value": value.value}
    if isinstance(value, Posting):
        return [value.account, _canonical(value.amount)]
    if isinstance(value, tuple | list):
        return [_canonical(item) for item in value]
    if isinstance(value, bool) or value is None:
        return {"bool_or_null": value}
    return value


def _is_party(account: str) -> bool:
    """A user or room account (not a system one, not a malformed id)."""
    return is_valid_account(account) and not account.startswith("system:")
