"""The `ledger serve` instances of a fault scenario: each a subprocess with its own log,
paused, killed and restarted on cue, and a supervisor that watches them and knows which
partitions each owns."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ledger.settings import ENV_CREDIT_KEY, ENV_STATE_DIR, Settings

REPO = Path(__file__).resolve().parent.parent
# The processors' shared secret in fault runs (signs routed credits): one for all instances.
FAULTS_CREDIT_KEY = "faults-shared-credit-key"
_OWNS = re.compile(r"owns (?:partitions )?\[([0-9, ]*)\]")


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
