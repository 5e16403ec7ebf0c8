"""Process plumbing for the dev stack: pid files, ports, log tails, signals.

Only processes recorded in our own pid files are ever signalled, and only after
their command line proves they are still the process we started.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ledger.errors import InfrastructureError, UsageError

STOP_TIMEOUT_S = 30.0
POLL_S = 0.2


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _state(pid: int) -> str | None:
    """The process state letter from /proc (R, S, Z, ...), None if there is no such pid."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat_line.rsplit(")", 1)[1].split()[0]


def cmdline(pid: int) -> str:
    """The process's argv joined by spaces, or "" if it is gone or a zombie."""
    for _ in range(40):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return ""
        if raw:
            return raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if _state(pid) in (None, "Z", "X"):
            return ""
        # A starting JVM's cmdline reads empty for a moment while it maps its heap.
        time.sleep(0.05)
    return ""


def is_ours(pid: int, markers: Sequence[str]) -> bool:
    """Alive and its command line holds every marker (guards against pid reuse)."""
    line = cmdline(pid)
    return bool(line) and all(m in line for m in markers)


def live_pid(pid_file: Path, markers: Sequence[str]) -> int | None:
    """The pid from pid_file if that process is alive and still ours."""
    pid = read_pid(pid_file)
    return pid if pid is not None and is_ours(pid, markers) else None


def _reap(pid: int) -> None:
    # A child of this very process (tests) stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def send(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    _reap(pid)


def stop_pids(
    targets: Mapping[int, signal.Signals],
    markers: Mapping[int, Sequence[str]],
    timeout_s: float = STOP_TIMEOUT_S,
) -> list[int]:
    """Signal each pid, wait for all to exit, SIGKILL stragglers; return the killed ones."""
    for pid, sig in targets.items():
        send(pid, sig)
    deadline = time.monotonic() + timeout_s
    alive = set(targets)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            _reap(pid)
            if not is_ours(pid, markers[pid]):
                alive.discard(pid)
        if alive:
            time.sleep(POLL_S)
    for pid in alive:
        send(pid, signal.SIGKILL)
    wait_gone(alive, markers)
    return sorted(alive)


def wait_gone(pids: set[int], markers: Mapping[int, Sequence[str]], timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(is_ours(p, markers[p]) for p in pids):
        for pid in pids:
            _reap(pid)
        time.sleep(POLL_S)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on host:port (bind test, as the servers will bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def port_open(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def require_ports_free(ports: Sequence[int], what: str) -> None:
    busy = [p for p in ports if not port_free(p)]
    if busy:
        raise UsageError(
            f"cannot start {what}: port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use "
            "by a process this stack did not start (another stack or service?)"
        )


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def spawn(
    argv: Sequence[str],
    log_file: Path,
    pid_file: Path,
    cwd: Path,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a detached daemon (own session), output appended to log_file, pid recorded."""
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
            env=dict(env) if env is not None else None,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def wait_until(
    ready: Callable[[], bool],
    alive: Callable[[], bool],
    timeout_s: float,
    failure: Callable[[str], InfrastructureError],
) -> None:
    """Poll ready() until true; raise failure(reason) on timeout or early process exit."""
    deadline = time.monotonic() + timeout_s
    while True:
        if ready():
            return
        if not alive():
            raise failure("the process exited during startup")
        if time.monotonic() > deadline:
            raise failure(f"not ready after {timeout_s:.0f} s")
        time.sleep(0.5)
