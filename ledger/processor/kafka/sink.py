"""KafkaTransactionalSink: transactional producers taking turns, a watchdog on their calls.

librdkafka can block in a transactional call past its own timeout once a coordinator's
broker is gone (confluentinc/librdkafka#5456, #5511), and an abort fails while no
transaction coordinator is reachable. Each call therefore runs under a watchdog; a
producer that cannot finish its transaction is fenced by a new one with the same
transactional.id, which bumps the epoch: the broker aborts the open transaction and
nothing of the batch can commit twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from ledger.errors import InfrastructureError
from ledger.kafka import make_producer
from ledger.processor.budget import RestartBudget
from ledger.processor.ports import TXN_TIMEOUT_S, Failure, SinkFailed
from ledger.processor.state import ProcessorStats
from ledger.settings import Settings

ProducerFactory = Callable[..., Producer]

log = logging.getLogger("ledger.processor")

# Fatal producer errors that mean another instance owns the transactional id now.
FENCED = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)

# Kafka errors raised while producing one record that retrying cannot cure: the record is a
# poison pill (dead-lettered), not a reason to abort and retry the batch forever.
_RECORD_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError._INVALID_ARG})

# A watchdog gives transactional calls this much longer than their timeout to return.
WATCHDOG_GRACE_S = 15.0


class Stuck(SinkFailed):
    """A transactional call outlived its own timeout: whether it took effect is unknown."""

    def __init__(self, call: str) -> None:
        super().__init__(Failure.COMMIT_UNKNOWN, call)
        self.call = call


class CommitUnknown(SinkFailed):
    """commit_transaction kept failing with retriable errors: it may have committed."""

    def __init__(self, detail: str) -> None:
        super().__init__(Failure.COMMIT_UNKNOWN, detail)


def watched(
    call: str, fn: Callable[[], None], limit_s: float = TXN_TIMEOUT_S + WATCHDOG_GRACE_S
) -> None:
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
    if not done.wait(limit_s):
        raise Stuck(call)
    if errors:
        raise errors[0]


def is_fenced(e: KafkaException) -> bool:
    """Another instance took this transactional id over: this one must stop."""
    err = e.args[0]
    return bool(err.fatal()) and err.code() in FENCED


class KafkaTransactionalSink:
    """One instance's transactional producers, taking turns: commit with offsets, abort, replace.

    Once a commit returns, the coordinator still writes the transaction's markers, and a
    new transaction of the same transactional id meets CONCURRENT_TRANSACTIONS until they
    are written; librdkafka then re-registers partitions after a fixed 20 ms (offsets after
    retry.backoff.ms). At 2,000 commands/s nearly every batch paid that. So two producers
    (two stable ids) take turns: the other id's last transaction is long complete. Batches
    stay sequential, each begun after the previous one committed, so consumed offsets
    commit in order (and the group coordinator keeps the later commit record regardless).
    """

    def __init__(
        self,
        settings: Settings,
        instance_id: str,
        stats: ProcessorStats,
        make: ProducerFactory = make_producer,
        timeout_s: float = TXN_TIMEOUT_S,
    ) -> None:
        self.settings, self.stats, self._make, self.timeout_s = settings, stats, make, timeout_s
        self.topic = settings.topic("commands")
        first = f"{settings.topic_prefix}.processor.{instance_id}"
        self.txn_ids = (first, f"{first}.b")
        self.producers: list[Producer | None] = [None, None]
        self.turn = 0  # whose transaction is (or was last) open
        self._abandoned: list[Producer | None] = []  # a thread may still be inside them
        self._budget = RestartBudget("transactional producer failed")

    @property
    def producer(self) -> Producer | None:
        """The producer of the open (or last) transaction."""
        return self.producers[self.turn]

    def failure(self, error: BaseException) -> Failure | None:
        """Stuck calls and retried-out commits: unknown; a full local queue: abortable."""
        if isinstance(error, SinkFailed):
            return error.kind
        if isinstance(error, BufferError):
            return Failure.ABORTABLE
        if not isinstance(error, KafkaException):
            return None
        err = error.args[0]
        if err.code() in _RECORD_ERRORS:
            return Failure.RECORD
        if is_fenced(error):
            return Failure.FENCED
        return Failure.FATAL if err.fatal() else Failure.ABORTABLE

    def start(self, wait_s: float = 60.0) -> None:
        for turn, txn_id in enumerate(self.txn_ids):
            self.producers[turn] = self._init(txn_id, wait_s)

    def begin(self) -> Producer:
        """Begin the next batch's transaction on the other producer."""
        self.turn ^= 1
        producer = self.producer
        assert producer is not None
        producer.begin_transaction()
        return producer

    def _init(self, txn_id: str, wait_s: float) -> Producer:
        producer = self._make(self.settings, transactional_id=txn_id)
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

    def commit(self, offsets: dict[int, int], group: Any) -> None:
        """Send the consumed offsets to the transaction and commit it.

        By librdkafka's book: a retriable error means the commit may go on in the
        background and calling it again is right, so it is called again until the timeout;
        then the outcome is unknown (CommitUnknown). Abortable errors raise for the caller
        to abort; fatal ones for it to replace the producer.
        """
        producer = self.producer
        assert producer is not None
        positions = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        self._retrying(
            "send_offsets_to_transaction",
            lambda: producer.send_offsets_to_transaction(positions, group, self.timeout_s),
        )
        if not self._retrying(
            "commit_transaction", lambda: producer.commit_transaction(self.timeout_s)
        ):
            raise CommitUnknown("commit_transaction kept failing with retriable errors")

    def _retrying(self, call: str, fn: Callable[[], None]) -> bool:
        """fn() under the watchdog, again while it fails retriably; False if it never ended."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                watched(call, fn, self.timeout_s + WATCHDOG_GRACE_S)
                return True
            except KafkaException as e:
                err = e.args[0]
                if err.fatal() or err.txn_requires_abort() or not err.retriable():
                    raise
                if time.monotonic() > deadline:
                    if call == "commit_transaction":
                        return False
                    raise
                self.stats.commit_retries += 1
                log.warning("%s failed retriably (%s); calling it again", call, err.str())
                time.sleep(0.1)

    def abort(self) -> bool:
        """Abort the open transaction; False if it took a new producer to end it (the old
        transaction's outcome is then not ours to know: the caller must re-synchronise)."""
        producer = self.producer
        assert producer is not None
        try:
            watched("abort_transaction", lambda: producer.abort_transaction(self.timeout_s),
                    self.timeout_s + WATCHDOG_GRACE_S)
            return True
        except Stuck as stuck:
            self.replace(stuck.call)
        except KafkaException as abort_error:
            if abort_error.args[0].fatal() and is_fenced(abort_error):
                raise InfrastructureError(
                    f"cannot abort transaction: {abort_error}"
                ) from abort_error
            # No coordinator (brokers down), or the producer is dead: a new one ends it.
            self.replace(f"abort_transaction ({abort_error.args[0].str()})")
        return False

    def replace(self, failed: str) -> None:
        """Fence a producer that cannot finish its transaction with a new one.

        The new producer's init_transactions completes a transaction whose commit was
        already prepared and aborts any other: the caller re-synchronises from the
        group's stable committed offsets and the changelogs, never re-deciding blindly.
        """
        self._budget.spend(failed)
        log.error(
            "%s failed or did not return within %.0fs; fencing the producer with a new one "
            "and re-synchronising from the committed offsets",
            failed,
            self.timeout_s + WATCHDOG_GRACE_S,
        )
        self._abandoned.append(self.producer)  # a thread may still be inside it: never free it
        self.stats.producer_restarts += 1
        self.producers[self.turn] = self._init(self.txn_ids[self.turn], wait_s=300.0)
