"""The compiled event reader (projections/_eventreader.c), when it was built.

It reads event.v1 records as `decode.read_events` does, but writes Arrow buffers in
C instead of a Python object per field: the replay's decode step falls from ~4 µs to
well under 1 µs per event here. Without the extension (no compiler at install time)
`available()` is False and the pure-Python reader does the work; both give the same
rows and the same failures (a property test holds them equal).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import pyarrow as pa
from confluent_kafka import Message

from ledger.errors import CodecError, MalformedRecordError, TruncatedRecordError
from projections.decode import ACTORS, KINDS, Failure
from projections.store import AUDIT_SCHEMA, TS

try:
    from projections import _eventreader  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - only without a C compiler at install time
    _eventreader = None

_KINDS = pa.array(KINDS, pa.string())
_ACTORS = pa.array(ACTORS, pa.string())
_ERRORS: dict[int, type[CodecError]] = {1: TruncatedRecordError, 2: MalformedRecordError}


log = logging.getLogger("ledger.replay")


def available() -> bool:
    return _eventreader is not None


@functools.cache  # once per process: every batch would ask
def say_pure_python() -> None:
    log.warning("the compiled event reader (projections._eventreader) is not installed, "
                "probably no C compiler at install time: reading events with the slower "
                "pure-Python reader (same results)")


def read_audit(values: list[bytes], partitions: list[int], offsets: list[int], topic: str,
               as_of: int | None = None) -> tuple[pa.Table, list[Failure], int, int]:
    """(audit rows, failures, events left out by as_of, events read) of event.v1 records."""
    if _eventreader is None:
        raise RuntimeError("projections._eventreader was not built")
    cols, raw_failures, later, events = _eventreader.read(values, partitions, offsets, as_of)
    return _table(cols, topic), _failures(raw_failures), later, events


def read_messages(msgs: list[Message], topic: str, header: bytes, as_of: int | None = None,
                  ) -> tuple[pa.Table, list[Failure], int, int, list[int], set[int]]:
    """Consumed messages: the event.v1 records of topic read as in `read_audit`.

    Returns (audit rows, failures, later, events, slow, partitions): slow holds the
    indices of the messages left to the caller (errors, other topics, other schemas),
    partitions those of the records read here."""
    if _eventreader is None:
        raise RuntimeError("projections._eventreader was not built")
    cols, raw_failures, later, events, (slow, partitions) = _eventreader.read_messages(
        msgs, topic, header, as_of)
    return _table(cols, topic), _failures(raw_failures), later, events, slow, partitions


def _failures(raw: list[tuple[int, int, str]]) -> list[Failure]:
    return [(i, _ERRORS[kind](message)) for i, kind, message in raw]


def _table(cols: dict[str, Any], topic: str) -> pa.Table:
    rows, nulls = cols["rows_nulls"]

    def fixed(name: str, type_: pa.DataType) -> pa.Array:
        return pa.Array.from_buffers(type_, rows, [None, pa.py_buffer(cols[name])])

    def string(name: str, valid: pa.Buffer | None = None, null_count: int = 0) -> pa.Array:
        offsets, data = cols[name]
        return pa.Array.from_buffers(pa.string(), rows,
                                     [valid, pa.py_buffer(offsets), pa.py_buffer(data)],
                                     null_count)

    valid = pa.py_buffer(cols["reverses_valid"]) if nulls else None
    return pa.table([
        string("event_id"), string("command_id"), _KINDS.take(fixed("kind", pa.uint8())),
        fixed("posting", pa.int32()), string("account"), fixed("amount", pa.int64()),
        _ACTORS.take(fixed("actor", pa.uint8())), string("reason"),
        fixed("occurred_at", TS), string("reverses", valid, nulls),
        pa.repeat(topic, rows),
        fixed("partition", pa.int32()), fixed("offset", pa.int64()),
    ], schema=AUDIT_SCHEMA)


