"""Avro's binary encoding by hand: the pieces the hot record codecs are assembled from.

Writers return bytes to join; readers take (record, position) and return (value, next
position), raising MalformedRecordError on what Avro forbids and IndexError when the
record ends early (`codec_error` turns either into the codec's error).
"""

from __future__ import annotations

from ledger.errors import CodecError, MalformedRecordError, TruncatedRecordError

_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
# -64..63 take one byte: the zig-zag value itself.
ONE_BYTE = [bytes([(n << 1) ^ (n >> 63)]) for n in range(-64, 64)]
NULL, STRING_BRANCH, END = b"\x00", b"\x02", b"\x00"  # END: an array's closing empty block
FALSE, TRUE = b"\x00", b"\x01"  # a boolean is one byte, not a varint


def symbol_bytes(names: tuple[str, ...]) -> dict[str, bytes]:
    """Each enum symbol's encoding: the zig-zag varint of its index."""
    # Keyed by str: StrEnum members hash and compare as their values.
    return {name: ONE_BYTE[64 + i] for i, name in enumerate(names)}


def long_bytes(n: int) -> bytes:
    """An Avro long: the zig-zag varint of n."""
    if -64 <= n < 64:
        return ONE_BYTE[n + 64]
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
    return (ONE_BYTE[n + 64] if n < 64 else long_bytes(n)) + b


def optional_string_bytes(s: str | None) -> bytes:
    """A ["null", "string"] union: branch 0, or branch 1 and the string."""
    return NULL if s is None else STRING_BRANCH + string_bytes(s)


class Stamps:
    """The last timestamp's encoding: many records of a batch share the millisecond."""

    def __init__(self) -> None:
        self.ms, self.encoded = 0, ONE_BYTE[64]

    def __call__(self, ms: int) -> bytes:
        if ms != self.ms:
            self.ms, self.encoded = ms, long_bytes(ms)
        return self.encoded


def varint(d: bytes, pos: int) -> tuple[int, int]:
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


def string(d: bytes, pos: int) -> tuple[str, int]:
    """An Avro string at pos: (text, next pos); strict UTF-8."""
    b = d[pos]
    if b < 0x80 and not b & 1:  # the usual case: a length under 64 in one byte
        start = pos + 1
        end = start + (b >> 1)
        if end <= len(d):
            return d[start:end].decode(), end
    n, pos = varint(d, pos)
    end = pos + n
    if n < 0 or end > len(d):
        raise MalformedRecordError(f"string of length {n} at byte {pos} overruns the record")
    return d[pos:end].decode(), end


def codec_error(e: Exception, record: str = "event") -> CodecError:
    """A reader's IndexError, UnicodeDecodeError or MalformedRecordError as the codec's error."""
    if isinstance(e, IndexError):
        return TruncatedRecordError(f"{record} record is truncated")
    if isinstance(e, UnicodeDecodeError):
        return MalformedRecordError(f"{record} record holds invalid UTF-8: {e}")
    assert isinstance(e, CodecError)
    return e
