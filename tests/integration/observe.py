"""Follow <prefix>.results and <prefix>.deadletter in the background for tests to wait on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import TopicPartition

from ledger.kafka import make_consumer
from ledger.settings import Settings
from ledger.wire import Codec

T = TypeVar("T")


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    @property
    def source(self) -> tuple[int, int]:
        return int(self.headers["source_partition"]), int(self.headers["source_offset"])


class Observer:
    """Every committed result (by command id) and dead letter (by source position)."""

    def __init__(self, settings: Settings) -> None:
        self.codec = Codec()
        self.results: dict[str, list[dict[str, Any]]] = {}
        self.dead: dict[tuple[int, int], DeadLetter] = {}
        self.undecodable_results = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._results_topic = settings.topic("results")
        self._consumer = make_consumer(settings, None, **{"fetch.wait.max.ms": 10})
        self._consumer.assign(
            [
                TopicPartition(settings.topic(name), p, 0)
                for name in ("results", "deadletter")
                for p in range(settings.partitions)
            ]
        )
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for msg in self._consumer.consume(500, timeout=0.05):
                    if msg.error() is not None:
                        continue
                    with self._lock:
                        if msg.topic() == self._results_topic:
                            self._result(msg.value())
                        else:
                            headers = {
                                k: v.decode("utf-8", "replace") for k, v in msg.headers() or []
                            }
                            letter = DeadLetter(msg.key(), msg.value(), headers)
                            self.dead[letter.source] = letter
        finally:
            self._consumer.close()

    def _result(self, value: bytes | None) -> None:
        try:
            rec = self.codec.decode_as("result", value)
        except Exception:  # counted, and asserted on by tests: results must all decode
            self.undecodable_results += 1
            return
        self.results.setdefault(rec["command_id"], []).append(rec)

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = probe()
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.01)

    def result(self, command_id: str, nth: int = 1, timeout: float = 30.0) -> dict[str, Any]:
        """The nth result for a command id (a repeated id gets one result per record)."""

        def probe() -> dict[str, Any] | None:
            got = self.results.get(command_id, [])
            return got[nth - 1] if len(got) >= nth else None

        return self.wait(f"result #{nth} of {command_id}", probe, timeout)

    def dead_letter(self, partition: int, offset: int, timeout: float = 30.0) -> DeadLetter:
        return self.wait(
            f"dead letter of commands[{partition}]@{offset}",
            lambda: self.dead.get((partition, offset)),
            timeout,
        )

    def count_results(self, command_id: str) -> int:
        with self._lock:
            return len(self.results.get(command_id, []))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
