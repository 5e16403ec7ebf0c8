"""What every fault scenario shares besides its processes (faults.supervisor): a client
whose every command is logged in a History, waiting for quiet, and the final check."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError

from faults.checker import check_log
from faults.history import History, Op
from faults.report import CheckOptions, HistoryReport
from faults.supervisor import Exit, Supervisor, Timeline
from ledger.client import LedgerClient
from ledger.domain import Command
from ledger.errors import LedgerError
from ledger.processor.kafka import pending_commands
from ledger.settings import Settings


@contextlib.contextmanager
def client_logs(workdir: Path) -> Iterator[None]:
    """librdkafka's lines from this process's clients (brokers dying, reconnects) go to
    <workdir>/client.log instead of the terminal while a scenario runs."""
    logger = logging.getLogger("ledger.kafka")
    handler = logging.FileHandler(workdir / "client.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved
        handler.close()


class HistoryClient(LedgerClient):
    """The ledger's client; a command whose send fails is logged as unknown at once."""

    def __init__(self, settings: Settings, history: History) -> None:
        super().__init__(settings)
        self.history = history
        self.send_errors = 0

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        super()._on_delivery(err, msg)
        if err is None:
            return
        self.send_errors += 1
        try:
            rec = self.codec.decode_as("command", msg.value())
            ops = self.history.by_key.get((rec["account"], rec["command_id"]), [])
        except Exception:  # undecodable: nothing to log it against
            return
        for op in ops:
            self.history.unknown(op, f"send failed: {err.str()}")


class Driver:
    """Sends commands through a HistoryClient: at most `window` in flight, about `rate`
    per second (0: as fast as the window allows), each logged before it is sent."""

    def __init__(self, settings: Settings, history: History, window: int = 5000,
                 rate: float = 0.0) -> None:
        self.settings, self.history, self.window, self.rate = settings, history, window, rate
        self.client = HistoryClient(settings, history)
        self.sent = 0
        self.stop = threading.Event()
        self.hold = threading.Event()  # set: send nothing new until it is cleared
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def send(self, command: Command) -> Op:
        while (self.hold.is_set() or self.history.in_flight >= self.window) \
                and not self.stop.is_set():
            self.client.poll(0.05)
        op = self.history.invoke(command)
        try:
            future = self.client.submit(command, wait=True)
        except LedgerError as e:
            self.history.unknown(op, f"send failed: {e}")
            return op
        assert future is not None
        self.history.track(op, future)
        self.sent += 1
        return op

    def send_all(self, commands: Iterable[Command]) -> None:
        started = time.monotonic()
        for n, command in enumerate(commands, 1):
            if self.stop.is_set():
                break
            self.send(command)
            if self.rate:
                self.client.poll(0)
                delay = started + n / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        self._flush()

    def stream(self, commands: Iterable[Command]) -> threading.Thread:
        """send_all in a thread (stop it early with `driver.stop.set()`)."""

        def run() -> None:
            try:
                self.send_all(commands)
            except BaseException as e:  # reported by the scenario
                self.error = e
                raise

        self._thread = threading.Thread(target=run, name="driver", daemon=True)
        self._thread.start()
        return self._thread

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _flush(self, timeout: float = 120) -> None:
        with contextlib.suppress(LedgerError):  # undelivered sends report themselves
            self.client.flush(timeout)

    def settle(self, timeout: float, supervisor: Supervisor | None = None) -> int:
        """Wait for outcomes; what is still in flight after `timeout` becomes unknown."""
        self._flush()
        deadline = time.monotonic() + timeout
        while self.history.in_flight and time.monotonic() < deadline:
            if supervisor is not None:
                supervisor.sleep(0.2)
            else:
                time.sleep(0.2)
        return self.history.expire(f"no outcome within {timeout:.0f}s of the last send")

    def close(self) -> None:
        self.stop.set()
        self.client.close()


def wait_idle(settings: Settings, timeout: float, supervisor: Supervisor | None = None) -> bool:
    """Until the processor group has committed every command, routed credits included."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pending_commands(settings) == 0:
                return True
        except Exception:  # a broker restarting: ask again
            pass
        if supervisor is not None:
            supervisor.sleep(0.5)
        else:
            time.sleep(0.5)
    return False


@dataclass
class ScenarioReport:
    """What every scenario reports; `history` holds the checker's verdict."""

    scenario: str
    seed: int
    prefix: str
    seconds: float = 0.0
    sent: int = 0
    history: HistoryReport = field(default_factory=HistoryReport)
    exits: list[Exit] = field(default_factory=list)
    idle: bool = True  # the processors finished every command before the check
    timeline: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.history.lost

    @property
    def duplicated(self) -> int:
        return self.history.duplicated

    @property
    def ok(self) -> bool:
        return self.history.valid and self.idle

    def summary(self) -> str:
        head = (f"{self.scenario} seed {self.seed} ({self.prefix}): sent {self.sent} in "
                f"{self.seconds:.0f}s; lost {self.lost}, duplicated {self.duplicated}; "
                f"instance exits {len(self.exits)}; idle at the end: {self.idle}")
        return head + "\n" + self.history.summary()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["history"] = self.history.to_dict()
        out["ok"] = self.ok
        return out

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str))


def check(settings: Settings, history: History, options: CheckOptions | None = None
          ) -> HistoryReport:
    return check_log(history, settings, options)


def unique_prefix(name: str, seed: int) -> str:
    return f"{name}{seed}x{int(time.time() * 1000) % 10**9}"


def settle(settings: Settings, report: ScenarioReport, supervisor: Supervisor, driver: Driver,
           history: History, note: Timeline, idle_timeout_s: float,
           outcome_timeout_s: float) -> None:
    """After the stream: wait for the processors to go idle, then for the last outcomes."""
    report.idle = wait_idle(settings, idle_timeout_s, supervisor)
    note(f"processors idle: {report.idle}")
    expired = driver.settle(outcome_timeout_s, supervisor)
    note(f"outcomes: {dict(history.counts())} ({expired} expired as unknown)")


def stop_run(supervisor: Supervisor, driver: Driver | None, note: Timeline) -> None:
    """Stop every instance (by its pid) and the client, whatever happened."""
    codes = supervisor.stop_all()
    if driver is not None:
        driver.close()
    note(f"instances stopped: {codes}")


def keep_history(report: ScenarioReport, history: History, supervisor: Supervisor,
                 workdir: Path) -> None:
    """The run's history on disk (re-checkable), and the instances' exits in the report."""
    report.sent = len(history)
    history.dump(workdir / "history.jsonl")
    report.exits = supervisor.exits
