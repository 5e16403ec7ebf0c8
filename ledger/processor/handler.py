"""One command record in, its records out: decode, check, decide, write (inside a batch).

Everything here runs inside the batch's open transaction (a TransactionalSink's): journal events,
account states, routed credits and results are produced at once, balance
snapshots once per account at the end of the batch. State changes go to the
overlay, which the processor merges only after the transaction commits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ledger.credits import CreditSigner
from ledger.domain import (
    Accepted,
    AccountOpened,
    ApplyCredit,
    Command,
    Decision,
    DedupWindow,
    JournalEntry,
    Limits,
    Rejected,
    RejectReason,
    decide,
    envelope_problem,
    issued_time,
)
from ledger.errors import CodecError, InfrastructureError, MalformedRecordError
from ledger.processor.poison import Poisoned, dead_letter, position_of
from ledger.processor.ports import Failure, JournalLookup, Record, RecordWriter
from ledger.processor.routing import Router
from ledger.processor.state import Overlay, ProcessorStats
from ledger.records import (
    Outcome,
    ReverseRef,
    WireCommand,
    command_from_record,
    command_to_record,
    opened_to_record,
    record_problem,
    reverse_command,
)
from ledger.settings import Settings
from ledger.wire import Codec
from ledger.wire.hot import HotCodec

log = logging.getLogger("ledger.processor")

TOPIC_NAMES = ("commands", "events", "accounts", "balances", "results", "guards", "deadletter")

class CommandHandler:
    """Decides the records of one batch into the open transaction of `producer`."""

    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        overlay: Overlay,
        stats: ProcessorStats,
        journal: JournalLookup,
        router: Router,
        signer: CreditSigner,
        window: DedupWindow,
        failure: Callable[[BaseException], Failure | None],
    ) -> None:
        self.codec, self.overlay, self.stats, self.journal = codec, overlay, stats, journal
        self.router, self.signer, self.failure = router, signer, failure
        self.hot = HotCodec(codec)
        self.limits = Limits(settings.max_amount)
        self.window = window
        self.topic = {n: settings.topic(n) for n in TOPIC_NAMES}
        self.producer: RecordWriter | None = None  # the open transaction's, set per batch
        self._snapshots: dict[str, tuple[Any, str | None]] = {}
        self._decoded: dict[tuple[int, int], Any] = {}  # the batch's records, decoded once
        # Records whose handling failed for good, by (partition, offset): dead-lettered when
        # the aborted batch is consumed again.
        self.poisoned: dict[tuple[int, int], Exception] = {}

    def discard(self) -> None:
        """Forget the batch's pending snapshots (its transaction is gone)."""
        self._snapshots.clear()
        self._decoded.clear()

    def prefetch(self, msgs: list[Record]) -> None:
        """Decode a batch's records and read what the store knows of their ids, at once."""
        self._decoded.clear()
        ids: dict[int, list[str]] = {}
        for msg in msgs:
            try:
                rec = self.hot.command(msg.value())
            except CodecError:
                continue  # dead-lettered in its turn, by _read
            position = position_of(msg)
            self._decoded[position] = rec
            ids.setdefault(position[0], []).append(rec["command_id"])
        self.overlay.preload(ids)

    def handle_guarded(self, msg: Record) -> None:
        """Handle one record; a failure that would recur on retry poisons only that record."""
        partition, offset = position_of(msg)
        if self.poisoned:
            poison = self.poisoned.pop((partition, offset), None)
            if poison is not None:
                self.stats.commands += 1
                self._dead_letter(msg, poison)
                return
        try:
            self._handle(msg, partition, offset)
        except InfrastructureError:
            raise  # the state store's disk: never the record's fault
        except Exception as e:  # input nobody foresaw must stop one record, not the service
            kind = self.failure(e)
            if kind is not None and kind is not Failure.RECORD:
                raise  # the broker, the transaction, a full queue: abort and retry the batch
            raise Poisoned((partition, offset), e) from e

    def _handle(self, msg: Record, partition: int, offset: int) -> None:
        self.stats.commands += 1
        self.overlay.bind(partition)
        wire = self._read(msg, (partition, offset))
        if wire is None:
            return
        if wire.kind == "APPLY_CREDIT":
            verification = self.signer.verify(msg)
            if not verification:
                self._refuse_credit(msg, verification.describe())
                return
        refusal = self._refusal(msg, wire, partition)
        if refusal is None:
            now = int(time.time() * 1000)
            refused = self._outside_window(wire, now)
            if refused is not None:
                refusal = refused.reason, refused.detail
            else:
                command = wire.command or self._build_reverse(wire)
                if not isinstance(command, Rejected):
                    self._decide(wire, command, (partition, offset), now)
                    return
                refusal = command.reason, command.detail
        # Refusals (not decisions) are not remembered: the id stays free for a proper send.
        self._reply_rejected(wire, "", *refusal, store=False)

    def _read(self, msg: Record, position: tuple[int, int]) -> WireCommand | None:
        """The record as a command, or None once dead-lettered (no id to answer by)."""
        try:
            rec = self._decoded.pop(position, None) or self.hot.command(msg.value())
            problem = record_problem(rec)
            if problem is not None:
                raise MalformedRecordError(problem)
            return command_from_record(rec)
        except CodecError as e:
            self._dead_letter(msg, e)
            return None

    def _refuse_credit(self, msg: Record, why: str) -> None:
        """A credit no processor signed (forged, re-keyed, or under a key not listed): kept
        in the dead-letter topic with its origin, counted, never applied."""
        self.stats.credits_refused += 1
        self._dead_letter(msg, MalformedRecordError(
            f"an apply-credit record not signed by a processor key held here: {why}"))

    def _refusal(
        self, msg: Record, wire: WireCommand, partition: int
    ) -> tuple[RejectReason, str] | None:
        """Why a record is refused before any decision: misrouted or unusable."""
        raw_key = msg.key() or b""
        key = raw_key.decode("utf-8", "replace")
        if key != wire.key or self.router.key(raw_key) != partition:
            return RejectReason.MISROUTED, (
                f"record key {_shorten(key)} on partition {partition} does not route {wire.key}"
            )
        problem = envelope_problem(wire.record["command_id"], wire.record["reason"])
        return None if problem is None else (RejectReason.INVALID_COMMAND, problem)

    def _outside_window(self, wire: WireCommand, now: int) -> Rejected | None:
        """Expired or from the future; routed credits with a source are exempt: their
        marks guard them forever, and a room's owner may be down longer than the window."""
        if _credit_source(wire) is not None:
            return None
        rec = wire.record
        return self.window.refusal(issued_time(rec["command_id"], rec["issued_at"]), now)

    def _decide(
        self, wire: WireCommand, command: Command, position: tuple[int, int], now: int
    ) -> None:
        fingerprint = wire.fingerprint  # the payload as sent, minus id and timestamp
        previous = self.overlay.outcome(command.command_id)
        if previous is not None:
            if previous.payload_fingerprint == fingerprint:
                self._emit_result(previous, now)  # same id, same payload: the first outcome
            else:
                self._reply_rejected(
                    wire,
                    fingerprint,
                    RejectReason.CONFLICT,
                    f"command id {command.command_id} was used for another command",
                    store=False,
                )
            return
        source = _credit_source(wire)
        if source is not None and isinstance(command, ApplyCredit):
            if self.overlay.credit_applied(*source, command.account):
                self._reply_rejected(
                    wire, fingerprint, RejectReason.ALREADY_APPLIED,
                    f"the credit of {command.event_id} to {command.account} was applied before",
                    store=False)
                return
            self.overlay.mark_credit(*source, command.account)
        decision = decide(
            self.overlay,
            command,
            now_ms=now,
            limits=self.limits,
            reversed_ids=self.overlay.reversed_ids,
        )
        self._write(wire, command, decision, fingerprint, now, position)

    def _write(
        self,
        wire: WireCommand,
        command: Command,
        decision: Decision,
        fingerprint: str,
        now: int,
        position: tuple[int, int],
    ) -> None:
        if isinstance(decision, Rejected):
            self._reply_rejected(wire, fingerprint, decision.reason, decision.detail, now=now)
            return
        event_ids = self._produce_events(decision, wire.key.encode(), now, position)
        last_event = event_ids[-1] if event_ids else None
        for state in decision.states:
            self.overlay.put(state)
            self._snapshots[state.account] = (state, last_event)
        reverses = wire.record["ref_event_id"] if wire.kind == "REVERSE" else None
        outcome = Outcome(
            command.command_id, True, None, "", tuple(event_ids), wire.key, fingerprint, reverses
        )
        self.stats.accepted += 1
        self.overlay.record(outcome, now)
        if reverses:
            self._guard_reversal(reverses, command.command_id, position[0], now)
        self._emit_result(outcome, now)

    def _produce_events(
        self, decision: Accepted, key: bytes, now: int, position: tuple[int, int]
    ) -> list[str]:
        """Journal events, opened accounts and signed routed credits; the events' ids."""
        producer = self.producer
        assert producer is not None
        event_ids: list[str] = []
        for event in decision.events:
            if isinstance(event, JournalEntry):
                event_ids.append(event.event_id)
                producer.produce(self.topic["events"], self.hot.event(event), key)
            elif isinstance(event, AccountOpened):
                self.overlay.opened(event.account)
                producer.produce(
                    self.topic["accounts"],
                    key=event.account.encode(),
                    value=self.codec.encode("account", opened_to_record(event)),
                )
        for credit in decision.credits:
            # The source position orders this partition's credits for the room's owner.
            source = ReverseRef(credit.event_id, *position)
            value = self.codec.encode("command", command_to_record(credit, now, source))
            producer.produce(self.topic["commands"], key=credit.account.encode(),
                             value=value, headers=self.signer.sign(value))
        return event_ids

    def _guard_reversal(self, event_id: str, command_id: str, partition: int, now: int) -> None:
        assert self.producer is not None
        value = self.codec.encode("guard", {
            "kind": "EVENT_REVERSED", "event_id": event_id, "command_id": command_id,
            "source_partition": None, "source_offset": None, "accounts": [],
            "recorded_at": now})
        self.producer.produce(self.topic["guards"], value, f"r:{event_id}".encode(),
                              partition=partition)

    def flush_changelogs(self) -> None:
        """One snapshot per account and one mark per source partition per batch: the
        topics are compacted, the last record of a key counts."""
        producer = self.producer
        assert producer is not None
        now = int(time.time() * 1000)
        topic, balance = self.topic["balances"], self.hot.balance
        for account, (state, last_event) in self._snapshots.items():
            producer.produce(topic, balance(state, now, last_event), account.encode())
        for (partition, source), mark in self.overlay.changes.marks.items():
            value = self.codec.encode("guard", {
                "kind": "CREDITS_APPLIED", "event_id": None, "command_id": None,
                "source_partition": source, "source_offset": mark.offset,
                "accounts": sorted(mark.accounts), "recorded_at": now})
            producer.produce(self.topic["guards"], value, f"c:{source}".encode(),
                             partition=partition)
        self.discard()

    def _reply_rejected(
        self,
        wire: WireCommand,
        payload: str,
        reason: RejectReason,
        detail: str,
        store: bool = True,
        now: int | None = None,
    ) -> None:
        now = int(time.time() * 1000) if now is None else now
        outcome = Outcome(
            wire.record["command_id"], False, str(reason), detail, (), wire.key, payload
        )
        self.stats.rejected[str(reason)] = self.stats.rejected.get(str(reason), 0) + 1
        if store:
            self.overlay.record(outcome, now)
        self._emit_result(outcome, now)

    def _emit_result(self, outcome: Outcome, now: int) -> None:
        assert self.producer is not None
        value = self.hot.result(outcome, now)
        self.producer.produce(self.topic["results"], value, outcome.account.encode())

    def _build_reverse(self, wire: WireCommand) -> Command | Rejected:
        ref = wire.ref
        if ref is None:
            return Rejected(RejectReason.NOT_REVERSIBLE, "reverse needs the event's position")
        if not (0 <= ref.partition < self.router.partitions and ref.offset >= 0):
            return Rejected(
                RejectReason.NOT_REVERSIBLE,
                f"no position {ref.partition}@{ref.offset} in {self.topic['events']}",
            )
        found = self.journal.fetch(ref)
        if isinstance(found, str):
            return Rejected(RejectReason.NOT_REVERSIBLE, found)
        return reverse_command(wire, found.postings)

    def _dead_letter(self, msg: Record, error: Exception) -> None:
        assert self.producer is not None
        self.stats.dead_letters += 1
        log.warning(
            "dead-lettering %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), error
        )
        dead_letter(self.producer, self.topic["deadletter"], msg, error)


def _credit_source(wire: WireCommand) -> tuple[int, int] | None:
    """(partition, offset) of the command that routed an apply-credit record, if it says.

    Credits routed before sources were recorded carry none: the window guards them.
    """
    rec = wire.record
    if wire.kind != "APPLY_CREDIT" or rec["ref_partition"] is None or rec["ref_offset"] is None:
        return None
    return rec["ref_partition"], rec["ref_offset"]


def _shorten(text: str, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[:limit]}... ({len(text)} characters)"
