"""Private stacks for tests that need their own cluster or database, and the ports of
every stack the tests start, in one place.

Each test stack has its own block of ports, apart from the others and from the default
stack that `make demo` and `ledger dev up` leave running (9092-9094, SASL_SSL 9096-9098,
controllers 19092-19094, PostgreSQL 5432 and up), and below Linux's ephemeral range
(32768+): there a client's outgoing connection can hold a port, or leave it in TIME_WAIT
for a minute, just when a broker (re)starts on it. tests/unit/test_test_ports.py holds the
plan to that; a test that starts a stack takes its ports from here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import devstack
from devstack import kafka as dkafka
from devstack import postgres as dpg
from ledger.settings import default_home

JARS = dkafka.default_jars_dir(default_home())


@dataclass(frozen=True)
class KafkaPorts:
    """Where one test stack's brokers go: the first free block from `base` (steps of 100,
    devstack.free_base), or exactly `base` when the stack does not search."""

    name: str
    base: int
    brokers: int
    auth: bool = False
    search: bool = True

    def bases(self) -> list[int]:
        if not self.search:
            return [self.base]
        return devstack.candidate_bases(self.base, self.brokers, self.auth)

    def ports(self) -> set[int]:
        """Every port the stack may listen on, wherever the search lands."""
        return {p for b in self.bases()
                for p in devstack.stack_ports(dkafka.ClusterSpec(self.brokers, b, self.auth))}

    def pick(self) -> int:
        """The base port to start the stack on."""
        if not self.search:
            return self.base
        return devstack.free_base(self.base, self.brokers, self.auth)


@dataclass(frozen=True)
class PgPorts:
    """Where one test stack's PostgreSQL goes: the first free port from `first`
    (devstack.postgres.up searches PORT_TRIES ports)."""

    name: str
    first: int

    def ports(self) -> set[int]:
        return set(range(self.first, self.first + dpg.PORT_TRIES))


# The plan. Kafka blocks 1x092 put their controllers at 2x092; PostgreSQL sits at 2x432.
SESSION_KAFKA = KafkaPorts("session Kafka (conftest)", 18092, 1, search=False)
SESSION_PG = PgPorts("session PostgreSQL (conftest)", 26432)
DEVSTACK_KAFKA = KafkaPorts("dev-stack tests' Kafka", 12092, 3)
DEVSTACK_PG = PgPorts("dev-stack tests' PostgreSQL", 25432)
BROKER_LOSS_KAFKA = KafkaPorts("broker-loss cluster", 13092, 3)
AUTH_KAFKA = KafkaPorts("auth stack", 20092, 1, auth=True)
AUTH_CLUSTER_KAFKA = KafkaPorts("auth cluster", 21092, 3, auth=True)
OUTAGE_PG = PgPorts("database-outage PostgreSQL", 27432)
FAULTS_KAFKA = KafkaPorts("coordinator-kill cluster (faults.coordinator's default)", 14092, 3)
TEST_STACKS: tuple[KafkaPorts | PgPorts, ...] = (
    SESSION_KAFKA, SESSION_PG, DEVSTACK_KAFKA, DEVSTACK_PG, BROKER_LOSS_KAFKA, AUTH_KAFKA,
    AUTH_CLUSTER_KAFKA, OUTAGE_PG, FAULTS_KAFKA,
)


def require_java() -> None:
    if shutil.which("java") is None or not any(JARS.glob("kafka_2.13-*.jar")):
        pytest.skip(f"needs Java and the Kafka jars in {JARS}")


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
