"""The event a reversal names, checked at the position it names (for every JournalLookup)."""

from __future__ import annotations

from ledger.domain import JournalEntry
from ledger.errors import CodecError
from ledger.records import ReverseRef, entry_from_record
from ledger.wire import Codec


def checked_event(codec: Codec, ref: ReverseRef, offset: int,
                  value: bytes | None) -> JournalEntry | str:
    """The event read at `offset` (the first one at or after the ref's), or why it is not
    the one `ref` names."""
    if offset != ref.offset:
        return f"no event at offset {ref.offset} (next is {offset})"
    try:
        entry = entry_from_record(codec.decode_as("event", value))
    except CodecError as e:
        return f"event at {ref.partition}@{ref.offset} is undecodable: {e}"
    if entry.event_id != ref.event_id:
        return f"event at {ref.partition}@{ref.offset} is {entry.event_id}, not {ref.event_id}"
    return entry
