"""Broker loss on a three-broker cluster: nothing accepted is lost or applied twice.

Slow (not in the default run): `pytest -m slow tests/integration/test_broker_loss.py -s`.
A private cluster (replication factor 3, min.insync.replicas 2, KRaft with the three nodes
as voters) runs in a temporary home. Under a steady command stream with the processor
running as a real process:

1. kill -9 one broker that is not the active controller, restart it; then kill -9 the
   active KRaft controller, restart it. Every command with an accepted outcome is in the
   journal exactly once, and the balance snapshots equal the journal's fold.
2. kill -9 two of the three brokers: writes stall (min.insync.replicas 2) rather than being
   lost, and a `--wait` command gives up with a clear one-line message (exit 3) in bounded
   time. The brokers return, the same command id is sent again and decided once, and the
   stream that was running through the outage completes exactly once.

The figures are printed (run with -s) and written to <tmp>/broker_loss.json.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

import devstack
from ledger.domain import Actor, Earn
from ledger.settings import Settings
from ledger.topics import create_topics, describe_topics
from tests.integration.ledger_helpers import cli_args, journal, spawn_processor
from tests.integration.stacks import (
    BROKER_LOSS_KAFKA,
    JARS,
    require_java,
    stop,
    wait_for_line,
)
from tests.integration.workload import Workload

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass(frozen=True)
class Cluster:
    home: Path
    bootstrap: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_java()
    home = tmp_path_factory.mktemp("cluster3")
    try:
        # Below Linux's ephemeral range (stacks.py), so a client connection cannot take a
        # killed broker's port before it restarts.
        info = devstack.up(home, brokers=3, base_port=BROKER_LOSS_KAFKA.pick(), jars_dir=JARS)
        assert info.bootstrap is not None
        yield Cluster(home, info.bootstrap)
    finally:
        devstack.down(home, wipe=True)


def active_controller(bootstrap: str) -> int:
    """The KRaft quorum leader. (Through a broker, DescribeCluster names a random live
    broker as "controller" in KRaft mode, so the quorum itself is asked.)"""
    java = shutil.which("java")
    assert java
    deadline = time.monotonic() + 60
    while True:
        done = subprocess.run(
            [java, "-cp", f"{JARS}/*", "org.apache.kafka.tools.MetadataQuorumCommand",
             "--bootstrap-server", bootstrap, "describe", "--status"],
            capture_output=True, text=True, timeout=60,
        )
        found = re.search(r"LeaderId:\s+(\d+)", done.stdout)
        if found:
            return int(found.group(1))
        assert time.monotonic() < deadline, done.stdout + done.stderr
        time.sleep(1)


def described_controller(bootstrap: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return int(admin.describe_cluster(request_timeout=10).result().controller.id)


def test_broker_loss_loses_and_duplicates_nothing(cluster: Cluster, tmp_path: Path) -> None:
    started = time.monotonic()
    settings = Settings(bootstrap=cluster.bootstrap, topic_prefix=f"bl{uuid.uuid4().hex[:8]}",
                        partitions=3, home=tmp_path, store=f"duckdb:///{tmp_path / 'x.duckdb'}")
    create_topics(settings)
    for topic in describe_topics(settings):
        assert topic.replication_factor == 3, topic
        assert topic.configs["min.insync.replicas"] == "2", topic
    log = tmp_path / "serve.log"
    serve = spawn_processor(settings, "broker-loss", log)
    kills: list[str] = []
    events: list[str] = []

    def note(text: str) -> None:
        events.append(f"{time.monotonic() - started:6.1f}s {text}")
        print(events[-1], flush=True)

    try:
        wait_for_line(log, "owns partitions [0, 1, 2]")
        work = Workload(settings, users=24, rooms=6, seed=41)
        work.open_accounts()
        stream = work.stream(count=3000, rate=100)  # about 30 s of steady load
        note("stream 1 started: 3000 commands at 100/s")

        # 1. one broker, then the active controller
        time.sleep(4)
        controller = active_controller(cluster.bootstrap)
        note(f"active controller {controller} (DescribeCluster says "
             f"{described_controller(cluster.bootstrap)})")
        victim = next(n for n in (1, 2, 3) if n != controller)
        devstack.kill_broker(cluster.home, victim)
        kills.append(f"broker {victim}")
        note(f"kill -9 broker {victim}")
        time.sleep(6)
        devstack.start_broker(cluster.home, victim)
        note(f"broker {victim} back")
        time.sleep(3)
        controller = active_controller(cluster.bootstrap)
        devstack.kill_broker(cluster.home, controller)
        kills.append(f"controller {controller}")
        note(f"kill -9 active controller {controller}")
        time.sleep(6)
        note(f"new active controller {active_controller(cluster.bootstrap)}")
        devstack.start_broker(cluster.home, controller)
        note(f"node {controller} back")
        stream.join()
        note("stream 1 sent")
        work.outcomes(timeout=240)  # every outcome arrives: the processor kept going
        note("stream 1 decided")
        assert serve.poll() is None, "the processor died: " + log.read_text()[-3000:]

        # 2. two of three brokers down
        work.seed = 42  # new command ids for the second stream
        stream2 = work.stream(count=600, rate=20)  # runs through the outage
        note("stream 2 started: 600 commands at 20/s")
        time.sleep(3)
        survivor = active_controller(cluster.bootstrap)
        down = [n for n in (1, 2, 3) if n != survivor]
        for node in down:
            devstack.kill_broker(cluster.home, node)
            kills.append(f"broker {node} (two down)")
        note(f"kill -9 brokers {down}; {survivor} alone")
        waited = subprocess.run(
            [*cli_args(settings), "earn", "user:u0", "5", "--reason", "during the outage",
             "--command-id", "outage-1", "--wait", "--timeout", "10", "--json"],
            capture_output=True, text=True, timeout=180,
        )
        note(f"--wait during the outage: exit {waited.returncode}: {waited.stderr.strip()}")
        assert waited.returncode == 3, (waited.stdout, waited.stderr)
        assert "Traceback" not in waited.stderr
        assert len(waited.stderr.strip().splitlines()) == 1, waited.stderr
        assert waited.stderr.startswith("error: ")
        assert "outage-1" in waited.stderr  # names the command to retry
        assert serve.poll() is None, "the processor died: " + log.read_text()[-3000:]
        for node in down:
            devstack.start_broker(cluster.home, node)
        note(f"brokers {down} back")

        retried = subprocess.run(
            [*cli_args(settings), "earn", "user:u0", "5", "--reason", "during the outage",
             "--command-id", "outage-1", "--wait", "--timeout", "120", "--json"],
            capture_output=True, text=True, timeout=300,
        )
        note(f"same id after the outage: exit {retried.returncode}: {retried.stdout.strip()}")
        if retried.returncode != 0:  # leave the processor's stacks in its log
            serve.send_signal(signal.SIGUSR1)
            time.sleep(1)
        assert retried.returncode == 0, retried.stderr
        assert json.loads(retried.stdout)["status"] == "accepted"
        stream2.join()
        note("stream 2 sent")

        # The CLI's command joins the accounting: its outcome, asked again, is the first one.
        assert work.client is not None
        again = Earn(command_id="outage-1", actor=Actor.USER, reason="during the outage",
                     account="user:u0", amount=5)
        future = work.client.submit(again, wait=True)
        assert future is not None
        work.sent[again.command_id], work.futures[again.command_id] = again, future
        work.client.flush(60)
        totals = work.check_exactly_once()
        assert serve.poll() is None, "the processor died: " + log.read_text()[-3000:]
        entries = journal(settings)
        assert sum(1 for e in entries if e.command_id == "outage-1") == 1
    finally:
        code = stop(serve, timeout=60)
    assert code == 0, log.read_text()[-3000:]
    serve_log = log.read_text()
    figures = {
        "commands_sent": totals["sent"],
        "accepted": totals["accepted"],
        "rejected": totals["sent"] - totals["accepted"],
        "journal_events": totals["events"],
        "broker_kills": len(kills),
        "kills": kills,
        "lost": 0,  # check_exactly_once: every accepted command is in the journal
        "duplicated": 0,  # ... exactly once, and nothing else is
        "processor_restarts": 0,
        "aborted_transactions": serve_log.count("aborting and retrying the batch"),
        "consumer_rejoins": serve_log.count("rejoining with a new consumer"),
        "producer_restarts": serve_log.count("fencing the producer with a new one"),
        "wait_timeout_exit_code": waited.returncode,
        "wait_timeout_message": waited.stderr.strip(),
        "duration_s": round(time.monotonic() - started, 1),
        "timeline": events,
    }
    (tmp_path / "broker_loss.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    assert totals["accepted"] > 1000, totals
