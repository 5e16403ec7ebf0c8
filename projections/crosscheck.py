"""`ledger verify`'s second reading of the journal, independent of the replay's decoders.

The projector and the replay decode events with hand-written readers (ledger/wire/event.py
and the C reader beside it). Here the same records are decoded by
fastavro's generic schemaless reader instead (`Codec.decode_as`: the writer schema found by
the single-object header's fingerprint in the schemas/ catalogue), balances are folded from
the decoded postings in plain Python, and their checksum is what the store's must equal: a
bug in a hot decoder shows as a mismatch. This module never imports those decoders.

The same reading looks for ids that occur twice in the journal: an event id in two records
(a batch written twice), a (record key, command id) pair decided by two different events
(command ids are scoped per deciding account, which is the record key), and an event
reversed by two different reversals.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import Message

from ledger.errors import CodecError
from ledger.wire import Codec
from projections.checksum import balance_checksum

SUSPECTS_MAX = 100_000  # repeated hashes a check looks at closely: bounds the second pass
WITNESSES_KEPT = 3  # records kept per repeated value, to show

Location = tuple[int, int]  # (partition, offset)
HASH = np.dtype("<i8")  # a digest's 8 bytes as one sortable number


@dataclass
class Repeat:
    """A value that more than one journal event (or record) holds."""

    value: str
    records: int = 0  # how many records hold it
    # A few distinct holders, first seen first: holder -> (where, its event id). A holder
    # is the event id, or the record's location where one event in two records is the fault.
    holders: dict[object, tuple[Location, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """One check's repeated values (a few of them), how many in all, and if that is a floor."""

    check: str
    repeats: list[Repeat]
    count: int
    at_least: bool


def digest(text: str, key: bytes | None = None) -> bytes:
    """An 8-byte hash of text (and of the key before it), the same in every process:
    hash() is salted per process, and the workers' hashes meet the parent's. One blake2b
    call; the key is length-prefixed, so ("ab", "c") and ("a", "bc") differ."""
    data = text.encode() if key is None else len(key).to_bytes(4, "little") + key + text.encode()
    return hashlib.blake2b(data, digest_size=8).digest()


class HashLog:
    """A multiset of 64-bit hashes, one per event, in numpy arrays: 8 bytes an event.

    Memory must stay bounded on a 10M-event journal. A Python set of the ids themselves
    (36-character strings) would cost ~100 bytes an entry, ~1 GB per check; a set of
    16-byte digests about as much (object headers and the set's table). Sorted int64
    hashes cost 80 MB per check for 10M events and find every repeat with one sort. A
    repeated hash is only a suspect (two values may share a hash): a second reading of
    the journal compares the values themselves (`CrossCheck.confirm`).
    """

    def __init__(self) -> None:
        self._chunks: list[npt.NDArray[np.int64]] = []

    def add(self, digests: list[bytes]) -> None:
        """Digests (8 bytes each) read as int64s, with one join instead of an int each."""
        if digests:
            self._chunks.append(np.frombuffer(b"".join(digests), dtype=HASH))

    def extend(self, hashes: npt.NDArray[np.int64]) -> None:
        if len(hashes):
            self._chunks.append(hashes)

    def take(self) -> npt.NDArray[np.int64]:
        """Every hash in one array; the log is empty afterwards."""
        every = np.concatenate(self._chunks) if self._chunks else np.empty(0, HASH)
        self._chunks = []  # the chunks' memory goes before the caller's next step
        return every

    def repeated(self, limit: int = SUSPECTS_MAX) -> tuple[set[bytes], bool]:
        """(up to limit digests that occur more than once, whether there were more)."""
        every = self.take()
        every.sort()
        repeats = np.unique(every[1:][every[1:] == every[:-1]])
        raw = repeats[:limit].astype(HASH).tobytes()
        return {raw[i:i + 8] for i in range(0, len(raw), 8)}, len(repeats) > limit


class Check:
    """One duplicate check: hashes in the first reading, values in the second."""

    def __init__(self, name: str, by_record: bool = False) -> None:
        self.name = name
        self.by_record = by_record  # two records of one event count as two holders
        self.hashes = HashLog()
        self.suspects: set[bytes] = set()
        self.truncated = False
        self.seen: dict[str, Repeat] = {}

    def suspect(self) -> bool:
        self.suspects, self.truncated = self.hashes.repeated()
        return bool(self.suspects)

    def confirm(self, value: str, event_id: str, where: Location) -> None:
        """Count a record that holds a suspect value."""
        repeat = self.seen.setdefault(value, Repeat(value))
        repeat.records += 1
        if len(repeat.holders) < WITNESSES_KEPT:
            repeat.holders.setdefault(where if self.by_record else event_id, (where, event_id))

    def finding(self) -> Finding:
        repeats = sorted((r for r in self.seen.values() if len(r.holders) > 1),
                         key=lambda r: min(w for w, _ in r.holders.values()))
        return Finding(self.name, repeats, len(repeats), self.truncated)


@dataclass
class Partial:
    """What one reading of some partitions found, to be merged with the others'."""

    balances: dict[str, int]
    events: int
    hashes: tuple[npt.NDArray[np.int64], ...]  # of event ids, (key, command id)s, targets


class CrossCheck:
    """The journal read through fastavro: balances, their checksum, repeated ids."""

    def __init__(self, events_topic: str, codec: Codec | None = None,
                 as_of: int | None = None) -> None:
        self.topic = events_topic
        self.codec = codec or Codec()
        self.as_of = as_of
        self.balances: dict[str, int] = {}
        self.events = 0
        self.event_ids = Check("duplicate_event_id", by_record=True)
        self.commands = Check("duplicate_command_id")
        self.reversals = Check("double_reversal")

    def checksum(self) -> str:
        return balance_checksum(self.balances.items())

    def add(self, msgs: Iterable[Message]) -> None:
        """First reading: fold the postings, keep a hash of each id that must be unique."""
        ids: list[bytes] = []
        commands: list[bytes] = []
        targets: list[bytes] = []
        for m, rec in self._events(msgs):
            self._fold(rec["postings"])
            ids.append(digest(rec["event_id"]))
            commands.append(digest(rec["command_id"], m.key() or b""))
            if rec["kind"] == "REVERSED" and rec["reverses_event_id"] is not None:
                targets.append(digest(rec["reverses_event_id"]))
        self.events += len(ids)
        self.event_ids.hashes.add(ids)
        self.commands.hashes.add(commands)
        self.reversals.hashes.add(targets)

    def partial(self) -> Partial:
        return Partial(self.balances, self.events, tuple(c.hashes.take() for c in self._checks()))

    def merge(self, part: Partial) -> None:
        for account, amount in part.balances.items():
            self.balances[account] = self.balances.get(account, 0) + amount
        self.events += part.events
        for check, hashes in zip(self._checks(), part.hashes, strict=True):
            check.hashes.extend(hashes)

    def suspect(self) -> bool:
        """Whether any hash repeats, so that a second reading (`confirm`) is needed."""
        return any([c.suspect() for c in self._checks()])  # a list: every check must run

    def confirm(self, msgs: Iterable[Message]) -> None:
        """Second reading: the records whose hashes repeat, compared by value."""
        for m, rec in self._events(msgs):
            where = (m.partition() or 0, m.offset() or 0)
            event_id = rec["event_id"]
            if digest(event_id) in self.event_ids.suspects:
                self.event_ids.confirm(event_id, event_id, where)
            key = m.key() or b""
            if digest(rec["command_id"], key) in self.commands.suspects:
                pair = f"key {key.decode(errors='replace')!r}, command id {rec['command_id']!r}"
                self.commands.confirm(pair, event_id, where)
            target = _target(rec)
            if target is not None and digest(target) in self.reversals.suspects:
                self.reversals.confirm(target, event_id, where)

    def findings(self) -> list[Finding]:
        return [f for f in (c.finding() for c in self._checks()) if f.count]

    def _checks(self) -> tuple[Check, Check, Check]:
        return self.event_ids, self.commands, self.reversals

    def _events(self, msgs: Iterable[Message]) -> Iterable[tuple[Message, dict[str, Any]]]:
        """Decodable journal events up to as_of. Undecodable ones are the other reading's
        business (verify reports them with the dead-letter topic); skipped here as there."""
        for m in msgs:
            if m.error() is not None or m.topic() != self.topic:
                continue
            try:
                rec = self.codec.decode_as("event", m.value())
            except CodecError:
                continue
            if self.as_of is None or rec["occurred_at"] <= self.as_of:
                yield m, rec

    def _fold(self, postings: list[dict[str, Any]]) -> None:
        balances = self.balances
        for p in postings:
            account = p["account"]
            balances[account] = balances.get(account, 0) + p["amount"]


def _target(rec: dict[str, Any]) -> str | None:
    """The event a reversal reverses (None for every other kind)."""
    if rec["kind"] != "REVERSED":
        return None
    target = rec["reverses_event_id"]
    return None if target is None else str(target)
