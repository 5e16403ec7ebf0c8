"""Hand-written Avro for the records the processor reads and writes for every command.

fastavro spends 4-6 µs on one small record, most of it interpreting the schema; per
command the processor decodes a command and encodes a journal event, a result and
(per batch) a balance snapshot. `HotCodec` writes and reads exactly the layouts of
today's schema versions, pinned by their fingerprints, with a few byte joins: the
same bytes as `Codec.encode` (a property test holds both paths equal), at about a
quarter of the cost. When a pinned layout is no longer the catalogue's current one (a
new schema version), that record goes through the `Codec` instead.

Decoding only takes what it can read with certainty (one-byte enums and union
branches, varints of at most 9 bytes, strict UTF-8, no trailing bytes); anything
else is left to the `Codec`, which decodes it or raises the error that says why.
"""

from __future__ import annotations

from typing import Any

from ledger.codec import HEADER_LEN, MAGIC, Codec
from ledger.domain import AccountState, JournalEntry
from ledger.records import Outcome, entry_to_record, snapshot_to_record

Record = dict[str, Any]

# CRC-64-AVRO fingerprints of the layouts implemented here (schemas/*.v1.avsc).
EVENT_V1 = bytes.fromhex("10830ec63e44145b")
RESULT_V1 = bytes.fromhex("22103239321bfeb2")
BALANCE_V1 = bytes.fromhex("add20b911fd36282")
COMMAND_V1 = bytes.fromhex("0d2bb12398065867")

# Enum symbols in schema order: an enum is written as the zig-zag varint of its index.
_ENTRY_KINDS = ("GRANTED", "EARNED", "SPENT", "JOINED", "REVERSED")
_ACTORS = ("SYSTEM", "USER", "ADMIN")
_ACCOUNT_TYPES = ("USER", "ROOM", "SYSTEM")
_COMMAND_KINDS = ("OPEN_ACCOUNT", "EARN", "SPEND", "JOIN", "REVERSE", "APPLY_CREDIT")

_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
# -64..63 take one byte: the zig-zag value itself.
_ONE_BYTE = [bytes([(n << 1) ^ (n >> 63)]) for n in range(-64, 64)]
_NULL, _STRING_BRANCH, _END = b"\x00", b"\x02", b"\x00"


def _symbols(names: tuple[str, ...]) -> dict[str, bytes]:
    # Keyed by str: StrEnum members hash and compare as their values.
    return {name: _ONE_BYTE[64 + i] for i, name in enumerate(names)}


_KIND_BYTES = _symbols(_ENTRY_KINDS)
_ACTOR_BYTES = _symbols(_ACTORS)
_TYPE_BYTES = _symbols(_ACCOUNT_TYPES)


def long_bytes(n: int) -> bytes:
    """An Avro long: the zig-zag varint of n."""
    if -64 <= n < 64:
        return _ONE_BYTE[n + 64]
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError(f"{n} does not fit an Avro long")
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def string_bytes(s: str) -> bytes:
    """An Avro string: its UTF-8 length, then the bytes."""
    b = s.encode()
    n = len(b)
    return (_ONE_BYTE[n + 64] if n < 64 else long_bytes(n)) + b


def optional_string_bytes(s: str | None) -> bytes:
    """A ["null", "string"] union: branch 0, or branch 1 and the string."""
    return _NULL if s is None else _STRING_BRANCH + string_bytes(s)


class _Stamps:
    """The last timestamp's encoding: many records of a batch share the millisecond."""

    def __init__(self) -> None:
        self.ms, self.encoded = 0, _ONE_BYTE[64]

    def __call__(self, ms: int) -> bytes:
        if ms != self.ms:
            self.ms, self.encoded = ms, long_bytes(ms)
        return self.encoded


class HotCodec:
    """The processor's per-command records; each falls back to `codec` if its pin is stale."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        current = {n: codec.catalogue.reader(n).fingerprint for n in ("event", "result",
                                                                         "balance", "command")}
        self._event_fast = current["event"] == EVENT_V1
        self._result_fast = current["result"] == RESULT_V1
        self._balance_fast = current["balance"] == BALANCE_V1
        self._command_header = MAGIC + COMMAND_V1
        self._stamp = _Stamps()

    def event(self, e: JournalEntry) -> bytes:
        if not self._event_fast:
            return self.codec.encode("event", entry_to_record(e))
        parts = [MAGIC, EVENT_V1, string_bytes(e.event_id), string_bytes(e.command_id),
                 _KIND_BYTES[e.kind]]
        postings = e.postings
        if postings:
            parts.append(long_bytes(len(postings)))
            for p in postings:
                parts.append(string_bytes(p.account))
                parts.append(long_bytes(p.amount))
        parts += (_END, self._stamp(e.occurred_at_ms), _ACTOR_BYTES[e.actor],
                  string_bytes(e.reason), optional_string_bytes(e.reverses_event_id))
        return b"".join(parts)

    def result(self, o: Outcome, decided_at_ms: int) -> bytes:
        if not self._result_fast:
            return self.codec.encode("result", o.to_record(decided_at_ms))
        parts = [MAGIC, RESULT_V1, string_bytes(o.command_id),
                 _ONE_BYTE[64] if o.accepted else _ONE_BYTE[65],
                 optional_string_bytes(o.reason), string_bytes(o.detail)]
        ids = o.event_ids
        if ids:
            parts.append(long_bytes(len(ids)))
            parts += map(string_bytes, ids)
        parts += (_END, string_bytes(o.account), string_bytes(o.payload_fingerprint),
                  optional_string_bytes(o.reverses_event_id), self._stamp(decided_at_ms))
        return b"".join(parts)

    def balance(self, s: AccountState, updated_at_ms: int, last_event_id: str | None) -> bytes:
        if not self._balance_fast:
            return self.codec.encode("balance", snapshot_to_record(s, updated_at_ms,
                                                                   last_event_id))
        return b"".join((MAGIC, BALANCE_V1, string_bytes(s.account), long_bytes(s.balance),
                         long_bytes(s.floor), b"\x01" if s.is_open else b"\x00",
                         _TYPE_BYTES[s.account_type], self._stamp(updated_at_ms),
                         optional_string_bytes(last_event_id)))

    def command(self, data: bytes | None) -> Record:
        """A command record, as `Codec.decode_as("command", data)` returns it (or raises)."""
        if data is not None and data[:HEADER_LEN] == self._command_header:
            rec = read_command_v1(data)
            if rec is not None:
                return rec
        return self.codec.decode_as("command", data)


class _Unsure(Exception):
    """Something the fast reader does not vouch for: the Codec decides."""


def _varint(d: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint of at most 9 bytes (longer ones are left to the Codec)."""
    n = shift = 0
    while True:
        b = d[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return (n >> 1) ^ -(n & 1), pos
        shift += 7
        if shift > 56:
            raise _Unsure


def _string(d: bytes, pos: int) -> tuple[str, int]:
    b = d[pos]
    if b < 0x80 and not b & 1:  # the usual case: a length under 64 in one byte
        start = pos + 1
        end = start + (b >> 1)
    else:
        n, start = _varint(d, pos)
        if n < 0:
            raise _Unsure
        end = start + n
    if end > len(d):
        raise _Unsure
    return d[start:end].decode(), end


def _optional(d: bytes, pos: int, read: Any) -> tuple[Any, int]:
    branch = d[pos]
    if branch == 0:
        return None, pos + 1
    if branch != 2:
        raise _Unsure
    return read(d, pos + 1)  # type: ignore[no-any-return]


def _symbol(d: bytes, pos: int, symbols: tuple[str, ...]) -> str:
    b = d[pos]
    if b & 1 or b >= 2 * len(symbols):
        raise _Unsure
    return symbols[b >> 1]


def read_command_v1(d: bytes) -> Record | None:
    """The body of a command.v1 record after its header, or None if not certainly valid."""
    try:
        command_id, pos = _string(d, HEADER_LEN)
        kind = _symbol(d, pos, _COMMAND_KINDS)
        account, pos = _string(d, pos + 1)
        counterparty, pos = _optional(d, pos, _string)
        amount, pos = _varint(d, pos)
        floor, pos = _varint(d, pos)
        ref_event_id, pos = _optional(d, pos, _string)
        ref_partition, pos = _optional(d, pos, _varint)
        if ref_partition is not None and not -(1 << 31) <= ref_partition < (1 << 31):
            raise _Unsure  # an Avro int: let the Codec judge
        ref_offset, pos = _optional(d, pos, _varint)
        actor = _symbol(d, pos, _ACTORS)
        reason, pos = _string(d, pos + 1)
        issued_at, pos = _varint(d, pos)
    except (IndexError, UnicodeDecodeError, _Unsure):
        return None
    if pos != len(d):
        return None
    return {"command_id": command_id, "kind": kind, "account": account,
            "counterparty": counterparty, "amount": amount, "floor": floor,
            "ref_event_id": ref_event_id, "ref_partition": ref_partition,
            "ref_offset": ref_offset, "actor": actor, "reason": reason,
            "issued_at": issued_at}
