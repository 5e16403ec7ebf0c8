"""The Python client: submit commands, optionally await their outcomes.

Outcomes are read from points.results (read_committed). The watcher starts at
the end of every results partition before the first command it awaits is
sent, so no outcome can slip past it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from ledger.domain import Command, envelope_problem, issued_time
from ledger.errors import InfrastructureError, UsageError, WaitTimeoutError
from ledger.kafka import (
    consume_ready,
    make_consumer,
    make_producer,
    topic_partitions,
    unreachable,
    watermarks,
)
from ledger.records import Outcome, ReverseRef, command_to_record
from ledger.settings import Settings
from ledger.wire import Codec


def new_command_id() -> str:
    """A UUIDv7: time-ordered, and its time is the command's issued time, so a retry of
    the same id can never carry a newer one and escape the deduplication window."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0x2 << 62)
    return str(uuid.UUID(int=value | (rand & ((1 << 62) - 1))))


class LedgerClient:
    """Submits commands keyed by their deciding account; resolves outcomes by command id."""

    def __init__(self, settings: Settings, codec: Codec | None = None) -> None:
        self.settings = settings
        self.codec = codec or Codec()
        self.topic = settings.topic("commands")
        self.partitions = topic_partitions(settings, self.topic)
        self._producer: Producer = make_producer(settings)
        self._watcher: _ResultWatcher | None = None
        self._lock = threading.Lock()
        self.delivery_error: KafkaError | None = None

    def submit(
        self,
        command: Command,
        ref: ReverseRef | None = None,
        wait: bool = False,
        issued_at_ms: int | None = None,
    ) -> Future[Outcome] | None:
        """Send a command; with wait=True, a future of its outcome.

        A retry must carry the first send's issued time (`issued_at_ms`); for an id from
        new_command_id() it is the id's own time, so nothing needs to be kept.
        """
        problem = envelope_problem(command.command_id, command.reason)
        if problem is not None:  # the processor would refuse it: say so before sending
            raise UsageError(problem)
        future = self._watch().expect(command.command_id) if wait else None
        issued = issued_at_ms if issued_at_ms is not None else int(time.time() * 1000)
        record = command_to_record(command, issued_time(command.command_id, issued), ref)
        value = self.codec.encode("command", record)
        self._produce(command.deciding_account.encode(), value)
        return future

    def send(
        self, command: Command, ref: ReverseRef | None = None, timeout: float = 30.0
    ) -> Outcome:
        """Submit, flush and block for the outcome."""
        future = self.submit(command, ref, wait=True)
        assert future is not None
        self.flush(timeout)
        return self.result(command.command_id, future, timeout)

    def result(self, command_id: str, future: Future[Outcome], timeout: float) -> Outcome:
        try:
            return future.result(timeout)
        except TimeoutError:
            raise WaitTimeoutError(
                f"no outcome for command {command_id} within {timeout:g}s from "
                f"{self.settings.bootstrap}: is `ledger serve` running? "
                "(the command was sent and will be decided when it is)"
            ) from None

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports without waiting for every command to be acknowledged."""
        self._producer.poll(timeout)

    def flush(self, timeout: float = 30.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise InfrastructureError(
                f"{remaining} commands not acknowledged by Kafka at {self.settings.bootstrap} "
                f"within {timeout:g}s"
            )

    def close(self) -> None:
        if self._producer.flush(10):
            # Still undelivered (brokers down): the caller has been told by flush() or
            # send(); drop them here rather than in librdkafka's warning at exit.
            self._producer.purge()
            self._producer.flush(0)
        if self._watcher is not None:
            self._watcher.stop()

    def _produce(self, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic, key=key, value=value, on_delivery=self._on_delivery
                )
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain
            except KafkaException as e:
                if e.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise UsageError(
                        f"command of {len(value)} bytes is larger than Kafka's message limit"
                    ) from e
                raise unreachable(self.settings, e) from e

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.delivery_error = err

    def _watch(self) -> _ResultWatcher:
        with self._lock:
            if self._watcher is None:
                self._watcher = _ResultWatcher(self.settings, self.codec, self.partitions)
            return self._watcher


class _ResultWatcher:
    """Follows every results partition from its end and completes waiting futures."""

    def __init__(self, settings: Settings, codec: Codec, partitions: int) -> None:
        self.codec = codec
        self.waiting: dict[str, Future[Outcome]] = {}
        self._stop = threading.Event()
        topic = settings.topic("results")
        self.consumer = make_consumer(settings, None, **{"fetch.wait.max.ms": 5})
        try:
            ends = [
                watermarks(self.consumer, TopicPartition(topic, p))[1] for p in range(partitions)
            ]
        except KafkaException as e:
            raise unreachable(settings, e) from e
        self.consumer.assign([TopicPartition(topic, p, end) for p, end in enumerate(ends)])
        self._thread = threading.Thread(target=self._run, name="result-watcher", daemon=True)
        self._thread.start()

    def expect(self, command_id: str) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        self.waiting[command_id] = future
        return future

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for msg in consume_ready(self.consumer, 1000, 0.1):
                    if msg.error() is None:
                        self._resolve(msg.value())
        finally:
            self.consumer.close()

    def _resolve(self, value: bytes | None) -> None:
        rec = self.codec.decode_as("result", value)
        future = self.waiting.pop(rec["command_id"], None)
        if future is not None and not future.done():
            future.set_result(Outcome.from_record(rec))
