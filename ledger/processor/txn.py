"""The processor's transactional producers: turns, a watchdog on their calls, replacement.

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
from ledger.processor.state import ProcessorStats
from ledger.settings import Settings

log = logging.getLogger("ledger.processor")

# A consumer that fails fatally, or a producer that cannot finish its transaction, is replaced
# at most this often before the service gives up.
MAX_REJOINS = 5
REJOIN_WINDOW_S = 600.0
# Fatal producer errors that mean another instance owns the transactional id now.
FENCED = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)

# Transactional calls take this timeout; a watchdog gives them this much longer to return.
TXN_TIMEOUT_S = 30.0
WATCHDOG_GRACE_S = 15.0


class Stuck(Exception):
    """A transactional call outlived its own timeout."""

    def __init__(self, call: str) -> None:
        super().__init__(call)
        self.call = call


class RestartBudget:
    """At most MAX_REJOINS replacements in REJOIN_WINDOW_S, or InfrastructureError."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._times: list[float] = []

    def spend(self, last: str) -> None:
        now = time.monotonic()
        self._times = [t for t in self._times if now - t < REJOIN_WINDOW_S] + [now]
        if len(self._times) > MAX_REJOINS:
            raise InfrastructureError(
                f"{self.what} {len(self._times)} times in {REJOIN_WINDOW_S:.0f}s, last: {last}"
            )


def watched(call: str, fn: Callable[[], None]) -> None:
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
        raise Stuck(call)
    if errors:
        raise errors[0]


def is_fenced(e: KafkaException) -> bool:
    """Another instance took this transactional id over: this one must stop."""
    err = e.args[0]
    return bool(err.fatal()) and err.code() in FENCED


class Transactions:
    """One instance's transactional producers, taking turns: commit with offsets, abort, replace.

    Once a commit returns, the coordinator still writes the transaction's markers, and a
    new transaction of the same transactional id meets CONCURRENT_TRANSACTIONS until they
    are written; librdkafka then re-registers partitions after a fixed 20 ms (offsets after
    retry.backoff.ms). At 2,000 commands/s nearly every batch paid that. So two producers
    (two stable ids) take turns: the other id's last transaction is long complete. Batches
    stay sequential, each begun after the previous one committed, so consumed offsets
    commit in order (and the group coordinator keeps the later commit record regardless).
    """

    def __init__(self, settings: Settings, instance_id: str, stats: ProcessorStats) -> None:
        self.settings, self.stats = settings, stats
        legacy = f"{settings.topic_prefix}.processor.{instance_id}"
        # The first is the one id of earlier versions: starting fences what they left open.
        self.txn_ids = (legacy, f"{legacy}.b")
        self.producers: list[Producer | None] = [None, None]
        self.turn = 0  # whose transaction is (or was last) open
        self._abandoned: list[Producer | None] = []  # a thread may still be inside them
        self._budget = RestartBudget("transactional producer failed")

    @property
    def producer(self) -> Producer | None:
        """The producer of the open (or last) transaction."""
        return self.producers[self.turn]

    @producer.setter
    def producer(self, producer: Producer | None) -> None:
        self.producers[self.turn] = producer

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

    def commit(self, positions: list[TopicPartition], group: Any) -> None:
        """Send the consumed offsets to the transaction and commit it (Stuck if hung)."""
        producer = self.producer
        assert producer is not None
        watched(
            "send_offsets_to_transaction",
            lambda: producer.send_offsets_to_transaction(positions, group, TXN_TIMEOUT_S),
        )
        watched("commit_transaction", lambda: producer.commit_transaction(TXN_TIMEOUT_S))

    def recover(self, e: KafkaException) -> None:
        """End a failed transaction: a fatal error replaces the producer, others abort."""
        err = e.args[0]
        if err.fatal():
            # E.g. a sequence desynchronisation after request timeouts while brokers died:
            # this producer is done for, the transactional id is not.
            self.replace(f"fatal producer error ({err.str()})")
            return
        log.warning("transaction failed (%s); aborting and retrying the batch", err.str())
        self.abort()

    def abort(self) -> None:
        """Abort the open transaction, or fence it with a new producer if that fails."""
        producer = self.producer
        assert producer is not None
        try:
            watched("abort_transaction", lambda: producer.abort_transaction(TXN_TIMEOUT_S))
        except Stuck as stuck:
            self.replace(stuck.call)
        except KafkaException as abort_error:
            if abort_error.args[0].fatal():
                raise InfrastructureError(
                    f"cannot abort transaction: {abort_error}"
                ) from abort_error
            # No coordinator (brokers down): a new producer aborts it when it gets one.
            self.replace(f"abort_transaction ({abort_error.args[0].str()})")

    def replace(self, failed: str) -> None:
        """Fence a producer that cannot finish its transaction with a new one."""
        self._budget.spend(failed)
        log.error(
            "%s failed or did not return within %.0fs; fencing the producer with a new one "
            "and retrying the batch",
            failed,
            TXN_TIMEOUT_S + WATCHDOG_GRACE_S,
        )
        self._abandoned.append(self.producer)  # a thread may still be inside it: never free it
        self.stats.producer_restarts += 1
        self.producer = self._init(self.txn_ids[self.turn], wait_s=300.0)
