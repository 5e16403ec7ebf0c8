"""The command processor: the single, exactly-once writer of the journal.

A consumer group on points.commands; each instance owns the accounts that hash
to its partitions. Per batch, inside one Kafka transaction: decide every
command, write journal events, account states, balance snapshots, results and
routed credits, and send the consumed offsets to the transaction. All of it
commits together or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from ledger.codec import Codec
from ledger.credits import CreditSigner
from ledger.domain import (
    AccountOpened,
    Command,
    Decision,
    JournalEntry,
    Limits,
    Rejected,
    RejectReason,
    decide,
    envelope_problem,
)
from ledger.errors import CodecError, InfrastructureError, MalformedRecordError
from ledger.kafka import (
    consume_ready,
    consumer_lag,
    make_consumer,
    make_producer,
    partition_for,
    topic_partitions,
)
from ledger.processor_io import JournalFetcher, dead_letter
from ledger.processor_state import AccountsTable, Overlay, PartitionState, restore_partition
from ledger.records import (
    Outcome,
    WireCommand,
    command_from_record,
    command_to_record,
    entry_to_record,
    opened_to_record,
    record_problem,
    reverse_command,
    snapshot_to_record,
)
from ledger.settings import Settings
from ledger.topics import guard_topics

log = logging.getLogger("ledger.processor")

# Kafka errors raised while producing for one record that retrying cannot cure: the record is
# a poison pill (dead-lettered), not a reason to abort and retry the batch forever.
_RECORD_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError._INVALID_ARG})


# A consumer that fails fatally, or a producer that cannot finish its transaction, is replaced
# at most this often before the service gives up.
MAX_REJOINS = 5
REJOIN_WINDOW_S = 600.0
# Fatal producer errors that mean another instance owns the transactional id now.
_FENCED = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)


# Transactional calls take this timeout; a watchdog gives them this much longer to return.
TXN_TIMEOUT_S = 30.0
WATCHDOG_GRACE_S = 15.0


class _Stuck(Exception):
    """A transactional call outlived its own timeout."""

    def __init__(self, call: str) -> None:
        super().__init__(call)
        self.call = call


class _Poisoned(Exception):
    """Handling one record failed in a way a retry would repeat."""

    def __init__(self, position: tuple[int, int], error: Exception) -> None:
        super().__init__(str(error))
        self.position, self.error = position, error


@dataclass
class ProcessorStats:
    """Counters for logs and metrics."""

    batches: int = 0
    commands: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    aborts: int = 0
    rejoins: int = 0
    producer_restarts: int = 0
    last_batch_ms: float = 0.0


class CommandProcessor:
    def __init__(
        self,
        settings: Settings,
        codec: Codec,
        instance_id: str,
        max_batch: int = 2000,
        batch_timeout: float = 0.1,
    ) -> None:
        self.settings, self.codec = settings, codec
        self.instance_id = instance_id
        self.max_batch, self.batch_timeout = max_batch, batch_timeout
        self.limits = Limits(settings.max_amount)
        self.signer = CreditSigner(settings.credit_key)
        self.stats = ProcessorStats()
        self.committed: dict[int, PartitionState] = {}
        self.accounts = AccountsTable(settings, codec)
        self.overlay = Overlay(self.committed, self.accounts)
        self.topic = {
            n: settings.topic(n)
            for n in ("commands", "events", "accounts", "balances", "results", "deadletter")
        }
        self._stop = threading.Event()
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.fetcher = JournalFetcher(settings, codec)
        self._snapshots: dict[str, tuple[Any, str | None]] = {}
        # Records whose handling failed for good, by (partition, offset): dead-lettered when
        # the aborted batch is consumed again.
        self._poisoned: dict[tuple[int, int], Exception] = {}
        self._rejoins: list[float] = []  # when the consumer was last replaced
        self._abandoned: list[Producer | None] = []  # producers stuck in a call (see _watched)
        self._restarts: list[float] = []  # when the producer was last replaced
        self.running = False
        self.lag: dict[int, int] = {}  # records behind the end per owned partition (metrics)
        self.metrics_server: Any = None

    # --- lifecycle -----------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        guard_topics(self.settings)
        self.signer.warn_if_development()
        self.partitions = topic_partitions(self.settings, self.topic["commands"])
        self.producer = self._init_producer()
        self.accounts.start()
        self.consumer = self._subscribe()
        log.info("processor %s started on %s", self.instance_id, self.settings.bootstrap)
        if on_ready:
            on_ready()
        self.running = True
        try:
            while not self._stop.is_set():
                msgs = consume_ready(self.consumer, self.max_batch, self.batch_timeout)
                fatal = next((m.error() for m in msgs if _is_fatal(m)), None)
                if fatal is not None:  # before any of the batch is handled: nothing to undo
                    self._rejoin(fatal)
                    continue
                self.lag = consumer_lag(
                    self.consumer, self.topic["commands"], sorted(self.committed)
                )
                if msgs:
                    self._process_batch(msgs)
        finally:
            self.running = False
            log.info("processor %s stopping: %s", self.instance_id, self.stats)
            self.consumer.close()
            self.accounts.stop()
            self.fetcher.close()
            if self.metrics_server is not None:
                self.metrics_server.close()

    def _subscribe(self) -> Consumer:
        consumer = make_consumer(
            self.settings,
            f"{self.settings.topic_prefix}.processor",
            **{
                "fetch.wait.max.ms": 5,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1000,
                "partition.assignment.strategy": "range",
                # Static membership: a restarted instance takes its partitions back at once
                # instead of waiting for the dead member's session to time out.
                "group.instance.id": self.instance_id,
            },
        )
        consumer.subscribe(
            [self.topic["commands"]],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        return consumer

    def _rejoin(self, error: KafkaError) -> None:
        """Replace a consumer that failed fatally, so the service outlives a broker failover.

        After the group coordinator moves (a broker lost), the broker may declare this very
        static member fenced (FENCED_INSTANCE_ID) although no other instance runs; the
        consumer is then dead for good. A new one rejoins under the same instance id and
        restores its partitions as on any assignment. Fencing by a real second instance
        with the same id also fences our transactional producer, which ends the run; the
        limit below stops a rejoin loop all the same.
        """
        assert self.consumer is not None
        now = time.monotonic()
        self._rejoins = [t for t in self._rejoins if now - t < REJOIN_WINDOW_S] + [now]
        if len(self._rejoins) > MAX_REJOINS:
            raise InfrastructureError(
                f"consumer failed fatally {len(self._rejoins)} times in "
                f"{REJOIN_WINDOW_S:.0f}s, last: {error.str()}"
            )
        log.error("consumer failed fatally (%s); rejoining with a new consumer", error.str())
        self.stats.rejoins += 1
        self.committed.clear()  # restored from the changelogs on the next assignment
        self.overlay.reset()
        with contextlib.suppress(KafkaException, RuntimeError):
            self.consumer.close()
        self.consumer = self._subscribe()

    def _init_producer(self, wait_s: float = 60.0) -> Producer:
        txn_id = f"{self.settings.topic_prefix}.processor.{self.instance_id}"
        producer = make_producer(self.settings, transactional_id=txn_id)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                # Also aborts whatever a previous incarnation of this id left open.
                producer.init_transactions(10)
                return producer
            except KafkaException as e:
                if time.monotonic() > deadline or not e.args[0].retriable():
                    raise InfrastructureError(
                        f"cannot start transactions on {self.settings.bootstrap}: {e}"
                    ) from e
                log.info("transaction coordinator not ready yet: %s", e)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.committed[tp.partition] = restore_partition(
                self.settings, self.codec, tp.partition
            )
        log.info("processor %s owns partitions %s", self.instance_id, sorted(self.committed))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.committed.pop(tp.partition, None)
        log.info(
            "processor %s released partitions %s; owns %s",
            self.instance_id,
            sorted(tp.partition for tp in partitions),
            sorted(self.committed),
        )

    # --- one batch, one transaction -------------------------------------------

    def _process_batch(self, msgs: list[Message]) -> None:
        assert self.producer is not None and self.consumer is not None
        started = time.monotonic()
        offsets: dict[int, int] = {}
        firsts: dict[int, int] = {}  # where to rewind to if the transaction fails, known first
        for msg in msgs:
            if msg.error() is None:
                firsts.setdefault(*_position(msg))
        try:
            self.producer.begin_transaction()
            for msg in msgs:
                if msg.error() is not None:
                    log.warning("consumer error: %s", msg.error())
                    continue
                partition, offset = _position(msg)
                offsets[partition] = offset + 1
                self._handle_guarded(msg)
            self._flush_snapshots()
            producer, group = self.producer, self.consumer.consumer_group_metadata()
            positions = [TopicPartition(self.topic["commands"], p, o) for p, o in offsets.items()]
            _watched(
                "send_offsets_to_transaction",
                lambda: producer.send_offsets_to_transaction(positions, group, TXN_TIMEOUT_S),
            )
            _watched("commit_transaction", lambda: producer.commit_transaction(TXN_TIMEOUT_S))
        except KafkaException as e:
            self._recover(e, firsts)
            return
        except _Stuck as stuck:
            self._replace_producer(stuck.call, firsts)
            return
        except _Poisoned as p:
            self._poisoned[p.position] = p.error
            log.error(
                "record %s[%d]@%d cannot be processed (%s: %s); "
                "retrying the batch without it and dead-lettering it",
                self.topic["commands"],
                *p.position,
                type(p.error).__name__,
                str(p.error)[:300],
            )
            self._abort_and_rewind(firsts)
            return
        self.overlay.merge()
        self.stats.batches += 1
        self.stats.last_batch_ms = (time.monotonic() - started) * 1000

    def _recover(self, e: KafkaException, firsts: dict[int, int]) -> None:
        """Abort, forget the batch, rewind to its first offsets; fatal errors end the run."""
        assert self.producer is not None and self.consumer is not None
        err = e.args[0]
        if err.fatal():
            if err.code() in _FENCED:  # another instance took this transactional id over
                self.overlay.reset()
                self._snapshots.clear()
                raise InfrastructureError(f"processor fenced: {err.str()}") from e
            # E.g. a sequence desynchronisation after request timeouts while brokers died:
            # this producer is done for, the transactional id is not.
            self._replace_producer(f"fatal producer error ({err.str()})", firsts)
            return
        log.warning("transaction failed (%s); aborting and retrying the batch", err.str())
        self._abort_and_rewind(firsts)

    def _abort_and_rewind(self, firsts: dict[int, int]) -> None:
        """Abort the open transaction, forget the batch, rewind to its first offsets."""
        assert self.producer is not None
        producer = self.producer
        try:
            _watched("abort_transaction", lambda: producer.abort_transaction(TXN_TIMEOUT_S))
        except _Stuck as stuck:
            self._replace_producer(stuck.call, firsts)
            return
        except KafkaException as abort_error:
            if abort_error.args[0].fatal():
                raise InfrastructureError(
                    f"cannot abort transaction: {abort_error}"
                ) from abort_error
            # No coordinator (brokers down): a new producer aborts it when it gets one.
            self._replace_producer(f"abort_transaction ({abort_error.args[0].str()})", firsts)
            return
        self._forget_batch(firsts)

    def _forget_batch(self, firsts: dict[int, int]) -> None:
        assert self.consumer is not None
        self.overlay.reset()
        self._snapshots.clear()
        self.stats.aborts += 1
        for partition, offset in firsts.items():
            if partition in self.committed:
                self.consumer.seek(TopicPartition(self.topic["commands"], partition, offset))

    def _replace_producer(self, failed: str, firsts: dict[int, int]) -> None:
        """Fence a producer that cannot finish its transaction with a new one; retry the batch.

        librdkafka can block in send_offsets_to_transaction() past its timeout once the
        group coordinator's broker is gone (confluentinc/librdkafka#5456, #5511), and an
        abort fails while no transaction coordinator is reachable. A new producer with the
        same transactional.id bumps the epoch: the broker aborts the open transaction and
        fences the old producer, so nothing of the batch can commit twice.
        """
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < REJOIN_WINDOW_S] + [now]
        if len(self._restarts) > MAX_REJOINS:
            raise InfrastructureError(
                f"transactional producer failed {len(self._restarts)} times in "
                f"{REJOIN_WINDOW_S:.0f}s, last: {failed}"
            )
        log.error(
            "%s failed or did not return within %.0fs; fencing the producer with a new one "
            "and retrying the batch",
            failed,
            TXN_TIMEOUT_S + WATCHDOG_GRACE_S,
        )
        self._abandoned.append(self.producer)  # a thread may still be inside it: never free it
        self.stats.producer_restarts += 1
        self.producer = self._init_producer(wait_s=300.0)
        self._forget_batch(firsts)

    def _handle_guarded(self, msg: Message) -> None:
        """Handle one record; a failure that would recur on retry poisons only that record."""
        position = _position(msg)
        poison = self._poisoned.pop(position, None)
        if poison is not None:
            self.stats.commands += 1
            self._dead_letter(msg, poison)
            return
        try:
            self._handle(msg)
        except BufferError:
            raise  # the local queue is full: transient, never the record's fault
        except KafkaException as e:
            if e.args[0].code() not in _RECORD_ERRORS:
                raise  # the broker or the transaction: abort and retry the batch
            raise _Poisoned(position, e) from e
        except Exception as e:  # input nobody foresaw must stop one record, not the service
            raise _Poisoned(position, e) from e

    def _handle(self, msg: Message) -> None:
        self.stats.commands += 1
        self.overlay.bind(_position(msg)[0])
        try:
            rec = self.codec.decode_as("command", msg.value())
            problem = record_problem(rec)
            if problem is not None:  # no usable id to answer by
                raise MalformedRecordError(problem)
            wire = command_from_record(rec)
        except CodecError as e:
            self._dead_letter(msg, e)
            return
        key = (msg.key() or b"").decode("utf-8", "replace")
        if key != wire.key or partition_for(msg.key() or b"", self.partitions) != msg.partition():
            # Refusals (not decisions) are not remembered: the id stays free for a proper send.
            self._reply_rejected(
                wire,
                payload="",
                reason=RejectReason.MISROUTED,
                detail=f"record key {_shorten(key)} on partition {msg.partition()} "
                f"does not route {wire.key}",
                store=False,
            )
            return
        problem = envelope_problem(wire.record["command_id"], wire.record["reason"])
        if problem is None and wire.kind == "APPLY_CREDIT" and not self.signer.verify(msg):
            problem = "an apply-credit record not signed by a processor (forged or re-keyed)"
        if problem is not None:
            self._reply_rejected(wire, "", RejectReason.INVALID_COMMAND, problem, store=False)
            return
        command = wire.command or self._build_reverse(wire)
        if isinstance(command, Rejected):
            self._reply_rejected(wire, "", command.reason, command.detail, store=False)
            return
        self._decide(wire, command)

    def _decide(self, wire: WireCommand, command: Command) -> None:
        fingerprint = wire.fingerprint  # the payload as sent, minus id and timestamp
        previous = self.overlay.outcome(command.command_id)
        if previous is not None:
            if previous.payload_fingerprint == fingerprint:
                self._emit_result(previous)  # same id, same payload: the first outcome again
            else:
                self._reply_rejected(
                    wire,
                    fingerprint,
                    RejectReason.CONFLICT,
                    f"command id {command.command_id} was used for another command",
                    store=False,
                )
            return
        now = int(time.time() * 1000)
        decision = decide(
            self.overlay,
            command,
            now_ms=now,
            limits=self.limits,
            reversed_ids=self.overlay.is_reversed(),
        )
        self._write(wire, command, decision, fingerprint, now)

    def _write(
        self, wire: WireCommand, command: Command, decision: Decision, fingerprint: str, now: int
    ) -> None:
        if isinstance(decision, Rejected):
            self._reply_rejected(wire, fingerprint, decision.reason, decision.detail)
            return
        assert self.producer is not None
        key = wire.key.encode()
        last_event: str | None = None
        for event in decision.events:
            if isinstance(event, JournalEntry):
                last_event = event.event_id
                self.producer.produce(
                    self.topic["events"],
                    key=key,
                    value=self.codec.encode("event", entry_to_record(event)),
                )
            elif isinstance(event, AccountOpened):
                self.overlay.opened.add(event.account)
                self.producer.produce(
                    self.topic["accounts"],
                    key=event.account.encode(),
                    value=self.codec.encode("account", opened_to_record(event)),
                )
        for credit in decision.credits:
            value = self.codec.encode("command", command_to_record(credit, now))
            self.producer.produce(self.topic["commands"], key=credit.account.encode(),
                                  value=value, headers=self.signer.sign(value))
        for state in decision.states:
            self.overlay.put(state)
            self._snapshots[state.account] = (state, last_event)
        reverses = wire.record["ref_event_id"] if wire.kind == "REVERSE" else None
        outcome = Outcome(
            command.command_id, True, None, "", decision.event_ids, wire.key, fingerprint, reverses
        )
        self.stats.accepted += 1
        self.overlay.record(outcome)
        self._emit_result(outcome)

    def _flush_snapshots(self) -> None:
        """One snapshot per account per batch: the topic is compacted, the last one counts."""
        assert self.producer is not None
        now = int(time.time() * 1000)
        for account, (state, last_event) in self._snapshots.items():
            self.producer.produce(
                self.topic["balances"],
                key=account.encode(),
                value=self.codec.encode("balance", snapshot_to_record(state, now, last_event)),
            )
        self._snapshots.clear()

    def _reply_rejected(
        self, wire: WireCommand, payload: str, reason: RejectReason, detail: str, store: bool = True
    ) -> None:
        outcome = Outcome(
            wire.record["command_id"], False, str(reason), detail, (), wire.key, payload
        )
        self.stats.rejected[str(reason)] = self.stats.rejected.get(str(reason), 0) + 1
        if store:
            self.overlay.record(outcome)
        self._emit_result(outcome)

    def _emit_result(self, outcome: Outcome) -> None:
        assert self.producer is not None
        value = self.codec.encode("result", outcome.to_record(int(time.time() * 1000)))
        self.producer.produce(self.topic["results"], key=outcome.account.encode(), value=value)

    def _build_reverse(self, wire: WireCommand) -> Command | Rejected:
        ref = wire.ref
        if ref is None:
            return Rejected(RejectReason.NOT_REVERSIBLE, "reverse needs the event's position")
        if not (0 <= ref.partition < self.partitions and ref.offset >= 0):
            return Rejected(
                RejectReason.NOT_REVERSIBLE,
                f"no position {ref.partition}@{ref.offset} in {self.topic['events']}",
            )
        found = self.fetcher.fetch(ref)
        if isinstance(found, str):
            return Rejected(RejectReason.NOT_REVERSIBLE, found)
        return reverse_command(wire, found.postings)

    def _dead_letter(self, msg: Message, error: Exception) -> None:
        assert self.producer is not None
        self.stats.dead_letters += 1
        log.warning(
            "dead-lettering %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), error
        )
        dead_letter(self.producer, self.topic["deadletter"], msg, error)


def _watched(call: str, fn: Callable[[], None]) -> None:
    """Run a transactional call, giving up on it if it outlives its own timeout."""
    errors: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # handed to the caller's thread below
            errors.append(e)
        finally:
            done.set()

    threading.Thread(target=run, name=call, daemon=True).start()
    if not done.wait(TXN_TIMEOUT_S + WATCHDOG_GRACE_S):
        raise _Stuck(call)
    if errors:
        raise errors[0]


def _is_fatal(msg: Message) -> bool:
    # A consumer's fatal error arrives as code _FATAL, without the fatal flag set.
    err = msg.error()
    return err is not None and (err.fatal() or err.code() == KafkaError._FATAL)


def _shorten(text: str, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[:limit]}... ({len(text)} characters)"


def _position(msg: Message) -> tuple[int, int]:
    """Partition and offset of a consumed message (never None once consumed)."""
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None
    return partition, offset
