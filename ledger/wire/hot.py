"""The processor's records per command, by hand where the pinned layouts are current.

Per command the processor decodes a command and encodes a journal event and a result
(and per batch a balance snapshot per account). `HotCodec` writes and reads them with
the hand-written codecs of `event`, `result`, `balance` and `command`: the same bytes
and records as the general `Codec` (property tests hold both paths equal), at about a
quarter of fastavro's cost. When a pinned layout is no longer the catalogue's current
one (a new schema version), that record goes through the `Codec` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ledger.domain import AccountState, JournalEntry
from ledger.records import Outcome, entry_to_record, snapshot_to_record
from ledger.wire import balance, command, event, result
from ledger.wire.avro import Stamps
from ledger.wire.catalogue import HEADER_LEN, Record
from ledger.wire.codec import Codec


class HotCodec:
    """The processor's per-command records; each falls back to `codec` if its pin is stale."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        current = {n: codec.catalogue.reader(n).fingerprint
                   for n in ("event", "result", "balance")}
        stamp = Stamps()  # shared: a batch's records share the millisecond
        # Bound once: the per-record call goes straight to the encoder.
        self.event: Callable[[JournalEntry], bytes] = (
            partial(event.encode, stamp) if current["event"] == event.FINGERPRINT
            else self._event_by_codec)
        self.result: Callable[[Outcome, int], bytes] = (
            partial(result.encode, stamp) if current["result"] == result.FINGERPRINT
            else self._result_by_codec)
        self.balance: Callable[[AccountState, int, str | None], bytes] = (
            partial(balance.encode, stamp) if current["balance"] == balance.FINGERPRINT
            else self._balance_by_codec)

    def command(self, data: bytes | None) -> Record:
        """A command record, as `Codec.decode_as("command", data)` returns it (or raises)."""
        if data is not None and data[:HEADER_LEN] == command.HEADER:
            rec = command.read(data)
            if rec is not None:
                return rec
        return self.codec.decode_as("command", data)

    def _event_by_codec(self, e: JournalEntry) -> bytes:
        return self.codec.encode("event", entry_to_record(e))

    def _result_by_codec(self, o: Outcome, decided_at_ms: int) -> bytes:
        return self.codec.encode("result", o.to_record(decided_at_ms))

    def _balance_by_codec(self, s: AccountState, updated_at_ms: int,
                          last_event_id: str | None) -> bytes:
        return self.codec.encode("balance", snapshot_to_record(s, updated_at_ms, last_event_id))
