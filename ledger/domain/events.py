"""Events: facts the ledger recorded, named in the past tense.

Journal entries are the source of truth for balances. Their constructors do
not validate (the decoder must be able to load a bad record so that verify
can report it); `decide` only ever builds valid ones.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from ledger.domain.accounts import AccountType, Posting
from ledger.domain.commands import Actor

# Fixed forever: changing it would change every event id derived from it.
# (= uuid5(NAMESPACE_URL, "urn:points-ledger:events"))
LEDGER_NAMESPACE = uuid.UUID("51b4be2e-3c01-5efd-a99a-3a4172c4e9a0")


_NAMESPACE_BYTES = LEDGER_NAMESPACE.bytes
# RFC 4122 variant: the top two bits of byte 8 are 10, i.e. its first hex digit is 8-b.
_VARIANT_DIGIT = {f"{d:x}": f"{(d & 0x3) | 0x8:x}" for d in range(16)}


def entry_event_id(command_id: str, account: str) -> str:
    """Deterministic id of a command's journal entry: a retry reproduces it.

    Command ids are scoped per deciding account, so the account is part of the name:
    two users who happen to use one command id write two entries with distinct ids.
    str(uuid.uuid5(LEDGER_NAMESPACE, f"{account}/{command_id}")), spelled out: building
    the UUID object cost three times the hash on the processor's hot path.
    """
    h = hashlib.sha1(_NAMESPACE_BYTES + f"{account}/{command_id}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}"


class EntryKind(StrEnum):
    GRANTED = "GRANTED"
    EARNED = "EARNED"
    SPENT = "SPENT"
    JOINED = "JOINED"
    REVERSED = "REVERSED"


@dataclass(frozen=True, kw_only=True)
class JournalEntry:
    """A balanced set of postings. Build a concrete subclass; `kind` is fixed by it."""

    kind: ClassVar[EntryKind]

    event_id: str
    command_id: str
    postings: tuple[Posting, ...]
    occurred_at_ms: int
    actor: Actor
    reason: str
    reverses_event_id: str | None = None

    def __post_init__(self) -> None:
        # The base has no kind; constructing it would write an untyped entry.
        if type(self) is JournalEntry:
            raise TypeError("construct a JournalEntry subclass, e.g. via journal_entry()")


@dataclass(frozen=True, kw_only=True)
class PointsGranted(JournalEntry):
    kind: ClassVar[EntryKind] = EntryKind.GRANTED


@dataclass(frozen=True, kw_only=True)
class PointsEarned(JournalEntry):
    kind: ClassVar[EntryKind] = EntryKind.EARNED


@dataclass(frozen=True, kw_only=True)
class PointsSpent(JournalEntry):
    kind: ClassVar[EntryKind] = EntryKind.SPENT


@dataclass(frozen=True, kw_only=True)
class RoomJoined(JournalEntry):
    kind: ClassVar[EntryKind] = EntryKind.JOINED


@dataclass(frozen=True, kw_only=True)
class EntryReversed(JournalEntry):
    kind: ClassVar[EntryKind] = EntryKind.REVERSED


ENTRY_CLASSES: dict[EntryKind, type[JournalEntry]] = {
    cls.kind: cls for cls in (PointsGranted, PointsEarned, PointsSpent, RoomJoined, EntryReversed)
}


def journal_entry(kind: EntryKind | str, **fields: Any) -> JournalEntry:
    """Build the subclass for `kind` (an EntryKind or its string value); for decoders."""
    return ENTRY_CLASSES[EntryKind(kind)](**fields)


@dataclass(frozen=True, kw_only=True)
class AccountOpened:
    account: str
    account_type: AccountType
    floor: int
    opened_at_ms: int
    command_id: str


@dataclass(frozen=True, kw_only=True)
class CreditApplied:
    """Internal: the credited account's owner applied a routed credit (not a journal entry)."""

    account: str
    amount: int
    event_id: str
    command_id: str


Event = AccountOpened | JournalEntry | CreditApplied


def fold_balances(entries: Iterable[JournalEntry]) -> dict[str, int]:
    """Balance of every account touched: the sum of its postings."""
    balances: dict[str, int] = {}
    for entry in entries:
        for posting in entry.postings:
            balances[posting.account] = balances.get(posting.account, 0) + posting.amount
    return balances
