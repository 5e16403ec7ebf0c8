"""The dev stack against real processes: a private home and non-default ports.

Ports from tests/integration/stacks.py (DEVSTACK_KAFKA, DEVSTACK_PG): below the ephemeral
range and clear of the session stack and of the default stack `make demo` leaves running.
Jars come from the shared cache so each temporary home does not refetch them. Auth mode
(`--auth`) is tested together with its clients in test_security.py.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

import devstack
from devstack import kafka as dkafka
from devstack import postgres as dpg
from devstack import proc as dproc
from ledger.errors import UsageError
from ledger.settings import default_home
from tests.integration.stacks import DEVSTACK_KAFKA, DEVSTACK_PG

pytestmark = pytest.mark.integration

# The first free block at collection time: a fixed base collided with other stacks
# (benchmarks pick free ports too) on a shared machine.
BASE = DEVSTACK_KAFKA.pick()
PG_PORT = DEVSTACK_PG.first
JARS = dkafka.default_jars_dir(default_home())

if shutil.which("java") is None or shutil.which("mvn") is None:
    pytest.skip("the dev stack needs Java and Maven", allow_module_level=True)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    h = tmp_path / "home"
    yield h
    devstack.down(h, wipe=True)  # never leave a process behind, even when a test failed


def _up(
    home: Path, brokers: int = 1, postgres: bool = False, auth: bool = False
) -> devstack.StackInfo:
    return devstack.up(home, brokers=brokers, postgres=postgres, auth=auth, base_port=BASE,
                       pg_port=PG_PORT, jars_dir=JARS)


def _broker_ids(
    bootstrap: str, extra: dict[str, str] | None = None, timeout_s: float = 10
) -> set[int]:
    admin = AdminClient({"bootstrap.servers": bootstrap, **(extra or {})})
    return set(admin.list_topics(timeout=timeout_s).brokers)


def _wait_brokers(bootstrap: str, expected: set[int], timeout_s: float = 30) -> None:
    """Fencing a crashed broker takes the controller a session timeout (about 9 s)."""
    deadline = time.monotonic() + timeout_s
    while (seen := _broker_ids(bootstrap)) != expected:
        assert time.monotonic() < deadline, f"brokers {seen}, expected {expected}"
        time.sleep(0.5)


def _pids(info: devstack.StackInfo) -> dict[str, int | None]:
    return {p.name: p.pid for p in info.processes}


def _assert_all_stopped(info: devstack.StackInfo) -> None:
    for p in info.processes:
        assert p.pid is not None
        assert not dproc.is_ours(p.pid, []), f"{p.name} (pid {p.pid}) is still alive"
        assert dproc.port_free(p.port), f"port {p.port} of {p.name} is still taken"


def test_single_broker_up_twice_status_refusals_and_down(home: Path) -> None:
    first = _up(home)
    assert first.bootstrap == f"127.0.0.1:{BASE}"
    assert first.postgres_url is None
    assert _broker_ids(first.bootstrap) == {1}

    second = _up(home)
    assert _pids(second) == _pids(first)  # idempotent: nothing restarted
    assert _broker_ids(second.bootstrap or "") == {1}

    now = devstack.status(home)
    assert now.running and all(p.alive for p in now.processes)
    assert [p.port for p in now.processes] == [BASE]
    assert any(first.bootstrap in line for line in now.describe())
    props = (dkafka.node_dir(home, 1, 1) / "server.properties").read_text()
    assert "auto.create.topics.enable=false" in props and "min.insync.replicas=1" in props

    with pytest.raises(UsageError, match="1-broker stack is running"):
        _up(home, brokers=3)
    assert not dkafka.cluster_dir(home, 3).exists()
    with pytest.raises(UsageError, match="other settings"):
        devstack.up(home, base_port=BASE + 100, jars_dir=JARS)

    messages = devstack.down(home)
    assert any("stopped kafka node 1" in m for m in messages)
    _assert_all_stopped(now)
    assert not dkafka.pid_file(home, 1, 1).exists()
    assert devstack.down(home) == ["nothing was running"]  # idempotent
    assert not devstack.status(home).running


def test_busy_port_is_refused_not_clobbered(home: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", BASE))
        squatter.listen()
        with pytest.raises(UsageError, match=f"{BASE}"):
            _up(home)
    assert not devstack.status(home).running


def test_kill_and_restart_one_broker(home: Path) -> None:
    info = _up(home)
    killed = devstack.kill_broker(home, 1)
    assert killed == info.processes[0].pid
    assert not devstack.status(home).processes[0].alive
    # SIGKILL returns before the kernel has torn the JVM's sockets down: allow it a moment.
    deadline = time.monotonic() + 10
    while not dproc.port_free(BASE):
        assert time.monotonic() < deadline, f"port {BASE} still taken 10 s after the kill"
        time.sleep(0.1)

    restarted = devstack.start_broker(home, 1)
    assert restarted != killed
    assert devstack.status(home).processes[0].alive
    assert _broker_ids(info.bootstrap or "") == {1}


def test_postgres_up_twice_and_down(home: Path) -> None:
    info = _up(home, postgres=True)
    assert info.postgres_url is not None
    port = int(info.postgres_url.rsplit(":", 1)[1].split("/")[0])
    assert port >= PG_PORT
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="ledger") as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("ledger",)
    pg_proc = next(p for p in info.processes if p.name == "postgres")
    assert pg_proc.pid is not None
    if os.geteuid() == 0:  # Postgres refuses root: it must run as the postgres user
        uid = os.stat(f"/proc/{pg_proc.pid}").st_uid
        assert pwd.getpwuid(uid).pw_name == "postgres"

    again = _up(home, postgres=True)
    assert _pids(again) == _pids(info)

    state = dpg.load_state(home)
    assert state is not None
    devstack.down(home, wipe=True)
    _assert_all_stopped(info)
    assert not state.run_dir.exists() and not dpg.pg_dir(home).exists()


@pytest.mark.slow
def test_three_broker_cluster(home: Path) -> None:
    info = _up(home, brokers=3)
    assert info.bootstrap == ",".join(f"127.0.0.1:{BASE + i}" for i in range(3))
    assert _broker_ids(info.bootstrap) == {1, 2, 3}
    props = (dkafka.node_dir(home, 3, 2) / "server.properties").read_text()
    assert "min.insync.replicas=2" in props and "transaction.state.log.min.isr=2" in props

    devstack.kill_broker(home, 2)
    _wait_brokers(f"127.0.0.1:{BASE}", {1, 3})
    devstack.start_broker(home, 2)
    _wait_brokers(info.bootstrap, {1, 2, 3})

    running = devstack.status(home)
    devstack.down(home)
    _assert_all_stopped(running)
