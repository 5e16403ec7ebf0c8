"""event.v1, the journal event: its layout, encoder, Python reader and the compiled reader.

Replay speed is bound by decoding: fastavro spends about 4 µs on one journal event,
most of it interpreting the schema, and the projector would then copy each dict into
columns. `read_events` reads the one writer layout on the wire today (event.v1, pinned
by its fingerprint) with a hand-written reader of Avro's binary encoding that appends
each field to its column list as it goes (about 2 µs per event); the compiled reader
(_eventreader.c, beside this module) does the same into Arrow buffers in well under
1 µs. Every other catalogued writer schema goes through the general `Codec`, which
resolves it to the reader schema. Property tests hold all three paths equal.

`encode` writes an event the way `Codec.encode` does (same bytes), at about a quarter
of the cost: the processor writes one per accepted command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.domain import JournalEntry
from ledger.errors import CodecError, MalformedRecordError, TruncatedRecordError
from ledger.wire.avro import (
    END,
    Stamps,
    codec_error,
    long_bytes,
    optional_string_bytes,
    string,
    string_bytes,
    symbol_bytes,
    varint,
)
from ledger.wire.catalogue import HEADER_LEN, pin
from ledger.wire.codec import Codec

try:
    from ledger.wire import _eventreader  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only without a C compiler at install time
    _eventreader = None

LAYOUT = pin("event.v1", ("event_id", "command_id", "kind", "postings", "occurred_at", "actor",
                          "reason", "reverses_event_id"))
FINGERPRINT = LAYOUT.fingerprint
# Another writer schema, even a compatible one, takes the codec path.
HEADER = LAYOUT.header
KINDS = LAYOUT.symbols("kind")
ACTORS = LAYOUT.symbols("actor")
_KIND_BYTES = symbol_bytes(KINDS)
_ACTOR_BYTES = symbol_bytes(ACTORS)

# (event_id, command_id, kind, postings [(account, amount)], occurred_at ms, actor, reason,
#  reverses_event_id): a plain tuple, the cheapest Python object.
Event = tuple[str, str, str, list[tuple[str, int]], int, str, str, str | None]
Failure = tuple[int, CodecError]  # (index in the input, why)


class EventColumns:
    """Events as columns: one entry per event, and one per posting (owner = event index)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.event_id: list[str] = []
        self.command_id: list[str] = []
        self.kind: list[str] = []
        self.occurred_at: list[int] = []
        self.actor: list[str] = []
        self.reason: list[str] = []
        self.reverses: list[str | None] = []
        self.partition: list[int] = []
        self.offset: list[int] = []
        self.owner: list[int] = []
        self.posting: list[int] = []
        self.account: list[str] = []
        self.amount: list[int] = []

    def __len__(self) -> int:
        return len(self.event_id)

    def add(self, e: Event, partition: int, offset: int) -> None:
        n = len(self.event_id)
        for i, (account, amount) in enumerate(e[3]):
            self.owner.append(n)
            self.posting.append(i)
            self.account.append(account)
            self.amount.append(amount)
        self._add_event(e[0], e[1], e[2], e[4], e[5], e[6], e[7], partition, offset)

    def _add_event(self, *fields: Any) -> None:
        for column, value in zip(self._event_columns(), fields, strict=True):
            column.append(value)

    def _event_columns(self) -> tuple[list[Any], ...]:
        return (self.event_id, self.command_id, self.kind, self.occurred_at, self.actor,
                self.reason, self.reverses, self.partition, self.offset)

    def event(self, i: int) -> Event:
        """Event i back as a tuple (tests, single decodes)."""
        postings = [(a, n) for o, a, n in zip(self.owner, self.account, self.amount,
                                              strict=True) if o == i]
        return (self.event_id[i], self.command_id[i], self.kind[i], postings,
                self.occurred_at[i], self.actor[i], self.reason[i], self.reverses[i])

    def truncate_postings(self, n: int) -> None:
        del self.owner[n:], self.posting[n:], self.account[n:], self.amount[n:]


def read_events(cols: EventColumns, values: Sequence[bytes], partitions: Sequence[int],
                offsets: Sequence[int], as_of: int | None = None) -> list[Failure]:
    """Append event.v1 records (with their HEADER) to cols; returns the bad ones.

    Events with occurred_at > as_of are left out. Inlined on purpose: a function call
    costs as much as a field. The common case of each length or small long is one byte
    (< 0x80; even = non-negative); the rest go to avro.string and avro.varint, which validate.
    """
    ev_a, cid_a, kind_a = cols.event_id.append, cols.command_id.append, cols.kind.append
    at_a, actor_a, reason_a = cols.occurred_at.append, cols.actor.append, cols.reason.append
    rev_a, part_a, off_a = cols.reverses.append, cols.partition.append, cols.offset.append
    own_a, post_a = cols.owner.append, cols.posting.append
    acc_a, amt_a = cols.account.append, cols.amount.append
    failures: list[Failure] = []
    n = len(cols.event_id)
    for index, d in enumerate(values):
        first_posting = len(cols.owner)
        try:
            pos = HEADER_LEN
            b = d[pos]
            if b < 0x80 and not b & 1:
                end = pos + 1 + (b >> 1)
                event_id = d[pos + 1 : end].decode()
            else:
                event_id, end = string(d, pos)
            b = d[end]
            if b < 0x80 and not b & 1:
                pos = end + 1 + (b >> 1)
                command_id = d[end + 1 : pos].decode()
            else:
                command_id, pos = string(d, end)
            kind = d[pos]
            pos += 1
            i = 0
            while True:
                b = d[pos]
                if b < 0x80:
                    count = (b >> 1) ^ -(b & 1)
                    pos += 1
                else:
                    count, pos = varint(d, pos)
                if count == 0:
                    break
                if count < 0:  # a block that also gives its byte size: skip the size
                    count = -count
                    _, pos = varint(d, pos)
                for _ in range(count):
                    b = d[pos]
                    if b < 0x80 and not b & 1:
                        end = pos + 1 + (b >> 1)
                        account = d[pos + 1 : end].decode()
                    else:
                        account, end = string(d, pos)
                    b = d[end]
                    if b < 0x80:
                        amount = (b >> 1) ^ -(b & 1)
                        pos = end + 1
                    else:
                        amount, pos = varint(d, end)
                    own_a(n)
                    post_a(i)
                    acc_a(account)
                    amt_a(amount)
                    i += 1
            occurred_at, pos = varint(d, pos)
            actor = d[pos]
            b = d[pos + 1]
            if b < 0x80 and not b & 1:
                end = pos + 2 + (b >> 1)
                reason = d[pos + 2 : end].decode()
                pos = end
            else:
                reason, pos = string(d, pos + 1)
            branch = d[pos]
            reverses = None
            if branch == 2:  # zig-zag 1: the string branch
                reverses, pos = string(d, pos + 1)
            elif branch == 0:
                pos += 1
            else:
                raise MalformedRecordError(f"union branch byte {branch} of reverses_event_id")
            if pos != len(d):
                raise MalformedRecordError(f"event record has {len(d) - pos} trailing bytes")
            if kind & 1 or kind >= 2 * len(KINDS) or actor & 1 or actor >= 2 * len(ACTORS):
                raise MalformedRecordError(f"enum byte out of range (kind {kind}, actor {actor})")
        except (IndexError, UnicodeDecodeError, MalformedRecordError) as e:
            cols.truncate_postings(first_posting)
            failures.append((index, codec_error(e)))
            continue
        if as_of is not None and occurred_at > as_of:
            cols.truncate_postings(first_posting)
            continue
        ev_a(event_id)
        cid_a(command_id)
        kind_a(KINDS[kind >> 1])
        at_a(occurred_at)
        actor_a(ACTORS[actor >> 1])
        reason_a(reason)
        rev_a(reverses)
        part_a(partitions[index])
        off_a(offsets[index])
        n += 1
    return failures


def _from_record(r: dict[str, Any]) -> Event:
    return (r["event_id"], r["command_id"], r["kind"],
            [(p["account"], p["amount"]) for p in r["postings"]], r["occurred_at"],
            r["actor"], r["reason"], r.get("reverses_event_id"))


class EventDecoder:
    """One record of <prefix>.events to an `Event`; raises the codec's errors on bad ones."""

    def __init__(self, codec: Codec | None = None) -> None:
        self.codec = codec or Codec()
        known = FINGERPRINT in self.codec.catalogue.by_fingerprint
        self.fast_header = HEADER if known else b"-"

    def is_fast(self, data: bytes | None) -> bool:
        return data is not None and data[:HEADER_LEN] == self.fast_header

    def decode(self, data: bytes | None) -> Event:
        if data is not None and self.is_fast(data):
            cols = EventColumns()
            failures = read_events(cols, [data], [0], [0])
            if failures:
                raise failures[0][1]
            return cols.event(0)
        return _from_record(self.codec.decode_as("event", data))


def encode(stamp: Stamps, e: JournalEntry) -> bytes:
    """e as an event.v1 record, header included: the bytes `Codec.encode` writes for it."""
    parts = [HEADER, string_bytes(e.event_id), string_bytes(e.command_id), _KIND_BYTES[e.kind]]
    postings = e.postings
    if postings:
        parts.append(long_bytes(len(postings)))
        for p in postings:
            parts.append(string_bytes(p.account))
            parts.append(long_bytes(p.amount))
    parts += (END, stamp(e.occurred_at_ms), _ACTOR_BYTES[e.actor], string_bytes(e.reason),
              optional_string_bytes(e.reverses_event_id))
    return b"".join(parts)


# The compiled reader's columns as Arrow buffers (see _eventreader.c; projections.rows
# makes audit rows of them).
Buffers = dict[str, Any]
_ERRORS: dict[int, type[CodecError]] = {1: TruncatedRecordError, 2: MalformedRecordError}


def compiled() -> bool:
    """Whether the compiled reader was built (it needs a C compiler at install time)."""
    return _eventreader is not None


def read_compiled(values: list[bytes], partitions: list[int], offsets: list[int],
                  as_of: int | None = None) -> tuple[Buffers, list[Failure], int, int]:
    """(buffers, failures, events left out by as_of, events read) of event.v1 records,
    as `read_events` reads them."""
    if _eventreader is None:
        raise RuntimeError("ledger.wire._eventreader was not built")
    cols, raw_failures, later, events = _eventreader.read(values, partitions, offsets, as_of)
    return cols, _failures(raw_failures), later, events


def read_compiled_messages(msgs: list[Any], topic: str, header: bytes,
                           as_of: int | None = None,
                           ) -> tuple[Buffers, list[Failure], int, int, list[int], set[int]]:
    """Consumed messages (confluent-kafka's Message, or any object with its accessors
    error, topic, value, partition and offset): the records of topic that start with
    header read as in `read_compiled`. Returns (buffers, failures, later, events, slow,
    partitions): slow holds the indices of the messages left to the caller (errors, other
    topics, other schemas), partitions those of the records read here."""
    if _eventreader is None:
        raise RuntimeError("ledger.wire._eventreader was not built")
    cols, raw_failures, later, events, (slow, partitions) = _eventreader.read_messages(
        msgs, topic, header, as_of)
    return cols, _failures(raw_failures), later, events, slow, partitions


def _failures(raw: list[tuple[int, int, str]]) -> list[Failure]:
    return [(i, _ERRORS[kind](message)) for i, kind, message in raw]

