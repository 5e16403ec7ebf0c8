"""What every fault scenario shares: `ledger serve` instances as subprocesses, a client
whose every command is logged in a History, waiting for quiet, and the final check."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError

from faults.history import CheckOptions, History, HistoryReport, Op, check_log
from ledger.client import LedgerClient
from ledger.domain import Command
from ledger.errors import LedgerError
from ledger.processor.kafka import pending_commands
from ledger.settings import ENV_CREDIT_KEY, ENV_STATE_DIR, Settings

REPO = Path(__file__).resolve().parent.parent
# The processors' shared secret in fault runs (signs routed credits): one for all instances.
FAULTS_CREDIT_KEY = "faults-shared-credit-key"
_OWNS = re.compile(r"owns (?:partitions )?\[([0-9, ]*)\]")


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


class Timeline:
    """Timestamped notes of what a scenario did, printed as they happen."""

    def __init__(self, quiet: bool = False) -> None:
        self.started = time.monotonic()
        self.lines: list[str] = []
        self.quiet = quiet
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        line = f"{time.monotonic() - self.started:7.1f}s {text}"
        with self._lock:
            self.lines.append(line)
        if not self.quiet:
            print(line, flush=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Instance:
    """One `ledger serve --instance-id X` subprocess: paused, killed, stopped by its own pid."""

    def __init__(self, settings: Settings, instance_id: str, workdir: Path,
                 credit_key: str = FAULTS_CREDIT_KEY, max_batch: int = 500) -> None:
        self.settings, self.instance_id, self.workdir = settings, instance_id, workdir
        self.credit_key, self.max_batch = credit_key, max_batch
        self.log = workdir / f"serve-{instance_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.incarnations = 0
        self.expected_exit = False  # set when we stop or kill it on purpose

    def start(self) -> Instance:
        argv = [sys.executable, "-m", "cli.main", "--bootstrap", self.settings.bootstrap,
                "--topic-prefix", self.settings.topic_prefix, "--partitions",
                str(self.settings.partitions), "-v", "serve", "--instance-id", self.instance_id,
                "--max-batch", str(self.max_batch)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", ENV_CREDIT_KEY: self.credit_key,
               ENV_STATE_DIR: str(self.workdir / "state")}
        with self.log.open("ab") as out:
            out.write(f"=== incarnation {self.incarnations + 1} ===\n".encode())
            out.flush()
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out, cwd=REPO, env=env)
        self.incarnations += 1
        self.paused, self.expected_exit = False, False
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.expected_exit = True
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM (after SIGCONT if paused), SIGKILL if it does not exit in time."""
        if self.proc is None:
            return None
        self.expected_exit = True
        if self.proc.poll() is None:
            if self.paused:
                self.resume()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def owned(self) -> set[int] | None:
        """The partitions its log last said it owns (None before it said anything)."""
        found = _OWNS.findall(self.text().rsplit("=== incarnation", 1)[-1])
        if not found:
            return None
        return {int(p) for p in found[-1].replace(" ", "").split(",") if p}

    def lines_since(self, offset: int, pattern: str) -> list[str]:
        """Log lines after byte `offset` that match `pattern` (a regular expression)."""
        rx = re.compile(pattern)
        return [ln for ln in self.text()[offset:].splitlines() if rx.search(ln)]


@dataclass
class Exit:
    instance: str
    code: int | None
    at_s: float
    last_lines: list[str]


class Supervisor:
    """The instances of a scenario; restarts one that exits on its own (as a deployment's
    supervisor would) and records why, so one crash does not end the run."""

    def __init__(self, settings: Settings, workdir: Path, timeline: Timeline,
                 credit_key: str = FAULTS_CREDIT_KEY, max_batch: int = 500,
                 restart: bool = True) -> None:
        self.settings, self.workdir, self.note = settings, workdir, timeline
        self.credit_key, self.max_batch, self.restart = credit_key, max_batch, restart
        self.instances: dict[str, Instance] = {}
        self.exits: list[Exit] = []

    def start(self, instance_id: str) -> Instance:
        inst = self.instances.get(instance_id)
        if inst is None:
            inst = Instance(self.settings, instance_id, self.workdir, self.credit_key,
                            self.max_batch)
            self.instances[instance_id] = inst
        return inst.start()

    def running(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.alive]

    def watch(self) -> None:
        """Record (and restart) every instance that exited without being told to."""
        for inst in self.instances.values():
            if inst.proc is None or inst.alive or inst.expected_exit:
                continue
            code = inst.proc.returncode
            tail = [ln for ln in inst.text().splitlines() if ln.strip()][-6:]
            self.exits.append(Exit(inst.instance_id, code, round(self.note.elapsed, 1), tail))
            self.note(f"instance {inst.instance_id} exited with {code}: "
                      f"{tail[-1] if tail else ''}")
            if self.restart:
                inst.start()
                self.note(f"instance {inst.instance_id} restarted")
            else:
                inst.expected_exit = True

    def sleep(self, seconds: float) -> None:
        """Sleep, watching the instances meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            self.watch()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.25, left))

    def wait_owned(self, want: Callable[[dict[str, set[int]]], bool], timeout: float) -> bool:
        """Until the running instances' logged ownership satisfies `want`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            owned = {i.instance_id: i.owned() or set() for i in self.running()}
            if want(owned):
                return True
            self.sleep(0.25)
        return False

    def stop_all(self) -> dict[str, int | None]:
        self.watch()
        return {i.instance_id: i.stop() for i in self.instances.values()}


def covers(partitions: int, *, each_nonempty: bool = False) -> Callable[[dict[str, set[int]]],
                                                                           bool]:
    """An ownership predicate: every partition owned exactly once (and by each instance)."""

    def ok(owned: dict[str, set[int]]) -> bool:
        seen = [p for ps in owned.values() for p in ps]
        if sorted(seen) != list(range(partitions)):
            return False
        return not each_nonempty or all(owned.values())

    return ok


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
