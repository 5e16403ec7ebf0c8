"""Consumed messages of <prefix>.events and <prefix>.accounts into one batch's columns.

Bad records (not decodable) are set aside for the dead-letter topic and the
batch goes on; an unknown writer-schema fingerprint stops everything: it means a
schema file is missing from this deployment, not that one record is bad.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ledger.errors import CodecError, UnknownFingerprintError
from ledger.settings import Settings
from ledger.wire import HEADER_LEN, Codec
from ledger.wire.account import AccountDecoder
from ledger.wire.event import (
    EventColumns,
    EventDecoder,
    compiled,
    read_compiled_messages,
    read_events,
)
from projections.log import check_message_error
from projections.rows import audit_table, compiled_audit_table

if TYPE_CHECKING:
    from projections.ports import ConsumedRecord

log = logging.getLogger("ledger.replay")


@functools.cache  # once per process: every batch would ask
def say_pure_python() -> None:
    log.warning("the compiled event reader (ledger.wire._eventreader) is not installed, "
                "probably no C compiler at install time: reading events with the slower "
                "pure-Python reader (same results)")


@dataclass(frozen=True)
class BadRecord:
    """An undecodable record and where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: str


class Ingest:
    """One batch being built: audit columns, latest account states, bad records."""

    def __init__(self, settings: Settings, codec: Codec | None = None,
                 as_of: int | None = None, native: bool | None = None) -> None:
        self.settings = settings
        self.codec = codec or Codec()
        self.decoder = EventDecoder(self.codec)
        self.account_decoder = AccountDecoder(self.codec)
        # The compiled reader when built; native=False forces the pure-Python one (tests).
        self.native = (compiled() if native is None else native) \
            and len(self.decoder.fast_header) == HEADER_LEN
        if native is None and not compiled():
            say_pure_python()
        self.events_topic = settings.topic("events")
        self.accounts_topic = settings.topic("accounts")
        self.as_of = as_of
        self.events = EventColumns()
        self.reset()

    def reset(self) -> None:
        self.events.reset()  # events read in Python
        self.chunks: list[pa.Table] = []  # audit rows from the compiled reader
        self.native_events = 0
        self.fast_partitions: set[int] = set()
        self.accounts: dict[str, dict[str, Any]] = {}
        self.bad: list[BadRecord] = []
        self.records = 0  # messages taken, of both topics
        self.later = 0  # events after as_of, left out
        self.other_partitions: set[tuple[str, int]] = set()  # of accounts and bad records

    def __len__(self) -> int:
        return self.records

    @property
    def event_count(self) -> int:
        """Events taken into the batch (left-out and bad ones not counted)."""
        return self.native_events + len(self.events)

    def audit(self) -> pa.Table:
        """The batch's audit rows."""
        tables = [*self.chunks, audit_table(self.events, self.events_topic)]
        # One chunk: a consume call with no event records (accounts only, say) leaves an
        # empty chunk, and Arrow's CSV writer (the Postgres store's COPY; pyarrow 26)
        # garbles the start of its output, NUL bytes for text, when a table's first
        # record batch is empty. The copy costs ~5 ms per 25k events (test_read_ingest).
        return pa.concat_tables(tables).combine_chunks()

    def add(self, msgs: Sequence[ConsumedRecord]) -> None:
        """Take consumed messages: events in bulk through a fast reader, the rest one by one."""
        self.records += len(msgs)
        if not self.native:
            self._add_python(msgs)
            return
        cols, failures, later, events, slow, partitions = read_compiled_messages(
            msgs if isinstance(msgs, list) else list(msgs), self.events_topic,
            self.decoder.fast_header, self.as_of)
        self.chunks.append(compiled_audit_table(cols, self.events_topic))
        self.native_events += events
        self.later += later
        self.fast_partitions.update(partitions)
        for index, exc in failures:
            self._set_aside(msgs[index], exc)
        if slow:
            self._add_python([msgs[i] for i in slow])

    def _add_python(self, msgs: Sequence[ConsumedRecord]) -> None:
        events_topic = self.events_topic
        fast = self.decoder.fast_header
        values: list[bytes] = []
        fast_msgs: list[ConsumedRecord] = []
        for m in msgs:
            if m.error() is not None and check_message_error(self.settings, m):
                continue
            if m.topic() != events_topic:
                self._add_account(m)
                continue
            value = m.value()
            if value is not None and value[:HEADER_LEN] == fast:
                values.append(value)
                fast_msgs.append(m)
            else:
                self._add_event(m)
        if values:
            self._add_fast(values, fast_msgs)

    def _add_fast(self, values: list[bytes], msgs: list[ConsumedRecord]) -> None:
        before = len(self.events)
        partitions = [m.partition() or 0 for m in msgs]
        self.fast_partitions.update(partitions)  # left-out events' too, as the native reader
        failures = read_events(self.events, values, partitions, [m.offset() or 0 for m in msgs],
                               self.as_of)
        for index, exc in failures:
            self._set_aside(msgs[index], exc)
        self.later += len(values) - len(failures) - (len(self.events) - before)

    def _add_event(self, m: ConsumedRecord) -> None:
        try:
            e = self.decoder.decode(m.value())
        except UnknownFingerprintError as exc:
            raise _located(exc, m) from exc
        except CodecError as exc:
            self._set_aside(m, exc)
            return
        if self.as_of is not None and e[4] > self.as_of:
            self.later += 1
            return
        self.events.add(e, m.partition() or 0, m.offset() or 0)

    def partitions(self) -> set[tuple[str, int]]:
        """Every (topic, partition) the batch holds records of."""
        events = {(self.events_topic, p)
                  for p in self.fast_partitions.union(self.events.partition)}
        return events | self.other_partitions

    def _add_account(self, m: ConsumedRecord) -> None:
        self.other_partitions.add((m.topic() or "", m.partition() or 0))
        value = m.value()
        if value is None:  # a tombstone: accounts are never deleted, nothing to apply
            return
        try:
            rec = self.account_decoder.decode(value)
        except UnknownFingerprintError as exc:
            raise _located(exc, m) from exc
        except CodecError as exc:
            self._set_aside(m, exc)
            return
        if self.as_of is None or rec["opened_at"] <= self.as_of:
            self.accounts[rec["account"]] = rec

    def _set_aside(self, m: ConsumedRecord, exc: CodecError) -> None:
        self.other_partitions.add((m.topic() or "", m.partition() or 0))
        self.bad.append(BadRecord(m.topic() or "", m.partition() or 0, m.offset() or 0,
                                  m.key(), m.value(), str(exc)))


def _located(exc: UnknownFingerprintError, m: ConsumedRecord) -> UnknownFingerprintError:
    return UnknownFingerprintError(
        f"{m.topic()}[{m.partition()}] offset {m.offset()}: {exc}. The projector stops "
        "here: deploy the schema file, then start it again")
