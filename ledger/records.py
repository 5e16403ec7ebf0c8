"""Translation between domain objects and Avro records (the codec's dicts)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from ledger.domain import (
    MAX_COMMAND_ID_CHARS,
    AccountOpened,
    AccountState,
    Actor,
    ApplyCredit,
    Command,
    Earn,
    Join,
    JournalEntry,
    OpenAccount,
    Posting,
    Reverse,
    Spend,
    journal_entry,
)
from ledger.errors import MalformedRecordError

Record = dict[str, Any]
_PAYLOAD_FIELDS = (
    "kind",
    "account",
    "counterparty",
    "amount",
    "floor",
    "ref_event_id",
    "ref_partition",
    "ref_offset",
    "actor",
    "reason",
)
_payload = itemgetter(*_PAYLOAD_FIELDS)
_ACTORS = {a.value: a for a in Actor}


def _actor(name: str) -> Actor:
    # Actor(name) takes ten times as long; an unknown name still gets Actor's error.
    return _ACTORS.get(name) or Actor(name)


@dataclass(frozen=True)
class ReverseRef:
    """A position: of the event to reverse in the journal (so its owner can fetch it), or,
    on a routed credit, of the command on points.commands that routed it."""

    event_id: str
    partition: int
    offset: int


def command_to_record(cmd: Command, issued_at_ms: int, ref: ReverseRef | None = None) -> Record:
    rec: Record = {
        "command_id": cmd.command_id,
        "account": cmd.deciding_account,
        "counterparty": None,
        "amount": 0,
        "floor": 0,
        "ref_event_id": None,
        "ref_partition": None,
        "ref_offset": None,
        "actor": str(cmd.actor),
        "reason": cmd.reason,
        "issued_at": issued_at_ms,
    }
    match cmd:
        case OpenAccount():
            rec.update(kind="OPEN_ACCOUNT", amount=cmd.grant, floor=cmd.floor)
        case Earn():
            rec.update(kind="EARN", amount=cmd.amount)
        case Spend():
            rec.update(kind="SPEND", amount=cmd.amount)
        case Join():
            rec.update(kind="JOIN", counterparty=cmd.room, amount=cmd.fee)
        case ApplyCredit():
            rec.update(kind="APPLY_CREDIT", amount=cmd.amount, ref_event_id=cmd.event_id)
            if ref is not None:  # the routing command's position: orders credits per source
                rec.update(ref_partition=ref.partition, ref_offset=ref.offset)
        case Reverse():
            rec.update(kind="REVERSE", ref_event_id=cmd.event_id)
            if ref is not None:
                rec.update(ref_partition=ref.partition, ref_offset=ref.offset)
    return rec


@dataclass(frozen=True)
class WireCommand:
    """A command as read off points.commands; a Reverse still lacks its original postings."""

    command: Command | None
    kind: str
    key: str
    record: Record = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """Digest of everything but command_id and issued_at: same id, other digest = conflict.

        Taken over the wire record rather than the domain command: it is ten times
        cheaper on the processor's hot path and covers exactly what the client sent.
        """
        payload = _payload(self.record)  # the same tuple as before: digests stay stable
        return hashlib.blake2b(repr(payload).encode(), digest_size=16).hexdigest()

    @property
    def ref(self) -> ReverseRef | None:
        r = self.record
        if r["ref_event_id"] is None or r["ref_partition"] is None or r["ref_offset"] is None:
            return None
        return ReverseRef(r["ref_event_id"], r["ref_partition"], r["ref_offset"])


def record_problem(rec: Record) -> str | None:
    """Why a decoded command record has no usable identity, or None.

    Such a record cannot be answered (no id to answer by, or ids so long that the answer
    would echo them): the processor dead-letters it. The bound on ids also bounds every
    record derived from a command.
    """
    command_id = rec["command_id"]
    if not 0 < len(command_id) <= MAX_COMMAND_ID_CHARS:
        return (
            f"command_id of {len(command_id)} characters: it must have 1 to {MAX_COMMAND_ID_CHARS}"
        )
    for name in ("account", "counterparty", "ref_event_id"):
        value = rec[name]
        if value is not None and len(value) > MAX_COMMAND_ID_CHARS:
            return f"{name} of {len(value)} characters is longer than {MAX_COMMAND_ID_CHARS}"
    return None


def command_from_record(rec: Record) -> WireCommand:
    """The domain command; Reverse commands come back with command=None (fetch first)."""
    common = {
        "command_id": rec["command_id"],
        "actor": _actor(rec["actor"]),
        "reason": rec["reason"],
    }
    kind, account, amount = rec["kind"], rec["account"], rec["amount"]
    cmd: Command | None
    if kind == "OPEN_ACCOUNT":
        cmd = OpenAccount(account=account, floor=rec["floor"], grant=amount, **common)
    elif kind == "EARN":
        cmd = Earn(account=account, amount=amount, **common)
    elif kind == "SPEND":
        cmd = Spend(account=account, amount=amount, **common)
    elif kind == "JOIN":
        cmd = Join(user=account, room=rec["counterparty"] or "", fee=amount, **common)
    elif kind == "APPLY_CREDIT":
        cmd = ApplyCredit(
            account=account, amount=amount, event_id=rec["ref_event_id"] or "", **common
        )
    elif kind == "REVERSE":
        cmd = None
    else:  # pragma: no cover - the enum admits nothing else
        raise MalformedRecordError(f"unknown command kind {kind}")
    return WireCommand(cmd, kind, account, rec)


def reverse_command(wire: WireCommand, original: tuple[Posting, ...]) -> Reverse:
    rec = wire.record
    return Reverse(
        command_id=rec["command_id"],
        actor=_actor(rec["actor"]),
        reason=rec["reason"],
        event_id=rec["ref_event_id"] or "",
        original=original,
    )


def entry_to_record(entry: JournalEntry) -> Record:
    return {
        "event_id": entry.event_id,
        "command_id": entry.command_id,
        "kind": str(entry.kind),
        "postings": [{"account": p.account, "amount": p.amount} for p in entry.postings],
        "occurred_at": entry.occurred_at_ms,
        "actor": str(entry.actor),
        "reason": entry.reason,
        "reverses_event_id": entry.reverses_event_id,
    }


def entry_from_record(rec: Record) -> JournalEntry:
    return journal_entry(
        rec["kind"],
        event_id=rec["event_id"],
        command_id=rec["command_id"],
        postings=tuple(Posting(p["account"], p["amount"]) for p in rec["postings"]),
        occurred_at_ms=rec["occurred_at"],
        actor=_actor(rec["actor"]),
        reason=rec["reason"],
        reverses_event_id=rec["reverses_event_id"],
    )


def opened_to_record(ev: AccountOpened) -> Record:
    return {
        "account": ev.account,
        "type": str(ev.account_type),
        "floor": ev.floor,
        "status": "OPEN",
        "opened_at": ev.opened_at_ms,
        "command_id": ev.command_id,
    }


def snapshot_to_record(state: AccountState, now_ms: int, last_event_id: str | None) -> Record:
    return {
        "account": state.account,
        "balance": state.balance,
        "floor": state.floor,
        "is_open": state.is_open,
        "type": str(state.account_type),
        "updated_at": now_ms,
        "last_event_id": last_event_id,
    }


def snapshot_from_record(rec: Record) -> AccountState:
    from ledger.domain import AccountType

    return AccountState(
        account=rec["account"],
        account_type=AccountType(rec["type"]),
        floor=rec["floor"],
        balance=rec["balance"],
        is_open=rec["is_open"],
    )


@dataclass(frozen=True)
class Outcome:
    """The first outcome of a command id: what a retry of the same id gets back."""

    command_id: str
    accepted: bool
    reason: str | None
    detail: str
    event_ids: tuple[str, ...]
    account: str
    payload_fingerprint: str
    reverses_event_id: str | None = None

    def to_record(self, decided_at_ms: int) -> Record:
        return {
            "command_id": self.command_id,
            "status": "ACCEPTED" if self.accepted else "REJECTED",
            "reason": self.reason,
            "detail": self.detail,
            "event_ids": list(self.event_ids),
            "account": self.account,
            "payload_fingerprint": self.payload_fingerprint,
            "reverses_event_id": self.reverses_event_id,
            "decided_at": decided_at_ms,
        }

    @classmethod
    def from_record(cls, rec: Record) -> Outcome:
        return cls(
            rec["command_id"],
            rec["status"] == "ACCEPTED",
            rec["reason"],
            rec["detail"],
            tuple(rec["event_ids"]),
            rec["account"],
            rec["payload_fingerprint"],
            rec["reverses_event_id"],
        )

    def to_json(self) -> dict[str, Any]:
        """The CLI contract's JSON shape of a write's outcome."""
        return {
            "command_id": self.command_id,
            "status": "accepted" if self.accepted else "rejected",
            "reason": self.reason,
            "event_ids": list(self.event_ids),
        }
