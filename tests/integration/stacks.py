"""Private dev stacks for tests that need their own cluster (auth, three brokers).

Each runs in a temporary home on ports away from the session stack (18092, controller
28092), a developer's stack (9092, controller 19092) and the dev-stack tests (29092+), and
below Linux's ephemeral range (32768+): there a client's outgoing connection can hold a
port in TIME_WAIT for a minute, and a broker (re)start on it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger import devstack_kafka as dkafka
from ledger import devstack_proc as dproc
from ledger.settings import default_home

JARS = dkafka.default_jars_dir(default_home())


def require_java() -> None:
    if shutil.which("java") is None or not any(JARS.glob("kafka_2.13-*.jar")):
        pytest.skip(f"needs Java and the Kafka jars in {JARS}")


def free_base(start: int, brokers: int, auth: bool = False, tries: int = 40) -> int:
    """The first base port from `start` (in steps of 100) whose every port is free."""
    for base in range(start, start + 100 * tries, 100):
        spec = dkafka.ClusterSpec(brokers, base, auth)
        if spec.controller_port(brokers) > 65535:
            break
        if all(dproc.port_free(p) for n in spec.node_ids for p in spec.node_ports(n)):
            return base
    raise RuntimeError(f"no free ports for a {brokers}-broker stack from {start}")


def ledger_argv(bootstrap: str, prefix: str, *extra: str) -> list[str]:
    """The real CLI with the global options of a test's topics."""
    return [sys.executable, "-m", "cli.main", "--bootstrap", bootstrap, "--topic-prefix",
            prefix, "--partitions", "3", *extra]


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A long-running CLI process (serve) writing to a log file."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=out, cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )


def wait_for_line(log: Path, text: str, timeout: float = 60, count: int = 1) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in {log}:\n" + log.read_text()[-3000:]
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM the process we started (by its pid), SIGKILL if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=10)
