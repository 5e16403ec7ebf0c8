"""Journal events off the wire, fast, straight into columns.

Replay speed is bound by decoding: fastavro spends about 4 µs on one journal
event, most of it interpreting the schema, and the projector would then copy
each dict into columns. `read_events` reads the one writer layout on the wire
today (event.v1, pinned by its fingerprint) with a hand-written reader of
Avro's binary encoding that appends each field to its column list as it goes
(about 2 µs per event). Every other catalogued writer schema goes through the
general `Codec`, which resolves it to the reader schema. A property test holds
both paths equal for any event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.codec import HEADER_LEN, MAGIC, Codec
from ledger.errors import CodecError, MalformedRecordError, TruncatedRecordError

# CRC-64-AVRO fingerprint of the canonical form of schemas/event.v1.avsc: the layout
# `read_events` implements. Another writer schema, even a compatible one, takes the codec path.
EVENT_V1_FINGERPRINT = bytes.fromhex("10830ec63e44145b")
FAST_HEADER = MAGIC + EVENT_V1_FINGERPRINT
KINDS = ("GRANTED", "EARNED", "SPENT", "JOINED", "REVERSED")
ACTORS = ("SYSTEM", "USER", "ADMIN")
# The same for schemas/account.v1.avsc: a replay reads one per account (~7 µs each through
# the codec, ~1.5 by hand), which showed at 100k accounts in a 1M-event journal.
ACCOUNT_V1_FINGERPRINT = bytes.fromhex("0d5147c93038f536")
ACCOUNT_TYPES = ("USER", "ROOM", "SYSTEM")
ACCOUNT_STATUSES = ("OPEN", "CLOSED")

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


def _varint(d: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint (Avro int/long) at pos: (value, next pos)."""
    n = 0
    shift = 0
    while True:
        b = d[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            if n >> 64:  # a long is 64 bits; Arrow's int64 columns could not hold it
                raise MalformedRecordError("varint overflows 64 bits")
            return (n >> 1) ^ -(n & 1), pos
        shift += 7
        if shift > 63:
            raise MalformedRecordError("varint longer than 10 bytes")


def _string(d: bytes, pos: int) -> tuple[str, int]:
    n, pos = _varint(d, pos)
    end = pos + n
    if n < 0 or end > len(d):
        raise MalformedRecordError(f"string of length {n} at byte {pos} overruns the record")
    return d[pos:end].decode(), end


def read_events(cols: EventColumns, values: Sequence[bytes], partitions: Sequence[int],
                offsets: Sequence[int], as_of: int | None = None) -> list[Failure]:
    """Append event.v1 records (with their FAST_HEADER) to cols; returns the bad ones.

    Events with occurred_at > as_of are left out. Inlined on purpose: a function call
    costs as much as a field. The common case of each length or small long is one byte
    (< 0x80; even = non-negative); the rest go to _string and _varint, which validate.
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
                event_id, end = _string(d, pos)
            b = d[end]
            if b < 0x80 and not b & 1:
                pos = end + 1 + (b >> 1)
                command_id = d[end + 1 : pos].decode()
            else:
                command_id, pos = _string(d, end)
            kind = d[pos]
            pos += 1
            i = 0
            while True:
                b = d[pos]
                if b < 0x80:
                    count = (b >> 1) ^ -(b & 1)
                    pos += 1
                else:
                    count, pos = _varint(d, pos)
                if count == 0:
                    break
                if count < 0:  # a block that also gives its byte size: skip the size
                    count = -count
                    _, pos = _varint(d, pos)
                for _ in range(count):
                    b = d[pos]
                    if b < 0x80 and not b & 1:
                        end = pos + 1 + (b >> 1)
                        account = d[pos + 1 : end].decode()
                    else:
                        account, end = _string(d, pos)
                    b = d[end]
                    if b < 0x80:
                        amount = (b >> 1) ^ -(b & 1)
                        pos = end + 1
                    else:
                        amount, pos = _varint(d, end)
                    own_a(n)
                    post_a(i)
                    acc_a(account)
                    amt_a(amount)
                    i += 1
            occurred_at, pos = _varint(d, pos)
            actor = d[pos]
            b = d[pos + 1]
            if b < 0x80 and not b & 1:
                end = pos + 2 + (b >> 1)
                reason = d[pos + 2 : end].decode()
                pos = end
            else:
                reason, pos = _string(d, pos + 1)
            branch = d[pos]
            reverses = None
            if branch == 2:  # zig-zag 1: the string branch
                reverses, pos = _string(d, pos + 1)
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
            failures.append((index, _codec_error(e)))
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


def read_account(d: bytes) -> dict[str, Any]:
    """An account.v1 record (after its header) as the codec would decode it."""
    try:
        account, pos = _string(d, HEADER_LEN)
        type_, pos = _varint(d, pos)
        floor, pos = _varint(d, pos)
        status, pos = _varint(d, pos)
        opened_at, pos = _varint(d, pos)
        command_id, pos = _string(d, pos)
    except (IndexError, UnicodeDecodeError) as e:
        raise _codec_error(e, "account") from e
    if pos != len(d):
        raise MalformedRecordError(f"account record has {len(d) - pos} trailing bytes")
    if not (0 <= type_ < len(ACCOUNT_TYPES) and 0 <= status < len(ACCOUNT_STATUSES)):
        raise MalformedRecordError(f"enum out of range (type {type_}, status {status})")
    return {"account": account, "type": ACCOUNT_TYPES[type_], "floor": floor,
            "status": ACCOUNT_STATUSES[status], "opened_at": opened_at,
            "command_id": command_id}


def _codec_error(e: Exception, record: str = "event") -> CodecError:
    if isinstance(e, IndexError):
        return TruncatedRecordError(f"{record} record is truncated")
    if isinstance(e, UnicodeDecodeError):
        return MalformedRecordError(f"{record} record holds invalid UTF-8: {e}")
    assert isinstance(e, CodecError)
    return e


def _from_record(r: dict[str, Any]) -> Event:
    return (r["event_id"], r["command_id"], r["kind"],
            [(p["account"], p["amount"]) for p in r["postings"]], r["occurred_at"],
            r["actor"], r["reason"], r.get("reverses_event_id"))


class AccountDecoder:
    """One record of <prefix>.accounts to its dict; account.v1 by hand, others by the codec."""

    def __init__(self, codec: Codec | None = None) -> None:
        self.codec = codec or Codec()
        known = ACCOUNT_V1_FINGERPRINT in self.codec.catalogue.by_fingerprint
        self.fast_header = MAGIC + ACCOUNT_V1_FINGERPRINT if known else b"-"

    def decode(self, data: bytes | None) -> dict[str, Any]:
        if data is not None and data[:HEADER_LEN] == self.fast_header:
            return read_account(data)
        return self.codec.decode_as("account", data)


class EventDecoder:
    """One record of <prefix>.events to an `Event`; raises the codec's errors on bad ones."""

    def __init__(self, codec: Codec | None = None) -> None:
        self.codec = codec or Codec()
        known = EVENT_V1_FINGERPRINT in self.codec.catalogue.by_fingerprint
        self.fast_header = FAST_HEADER if known else b"-"

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
