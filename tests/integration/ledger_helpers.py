"""Helpers for integration tests: run processors, read back the journal and snapshots."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ledger.domain import JournalEntry
from ledger.journal import latest_by_key, read_journal
from ledger.processor import CommandProcessor
from ledger.processor.kafka import pending_commands
from ledger.processor.service import ProcessorTuning
from ledger.settings import ENV_CREDIT_KEY, Settings
from ledger.wire import Codec
from ledger.wiring import ProcessorClients, build_processor

REPO = Path(__file__).resolve().parents[2]
# The processors' shared secret in tests: make_settings carries it, and every `ledger serve`
# a test spawns gets it in its environment, so in-process and spawned processors agree.
TEST_CREDIT_KEY = "integration-tests-credit-key"


def with_test_key(settings: Settings) -> Settings:
    """`settings` with the tests' credit key unless they name one (built by hand, say)."""
    return settings if settings.credit_key else settings.with_(credit_key=TEST_CREDIT_KEY)


@dataclass
class ThreadedProcessor:
    processor: CommandProcessor
    thread: threading.Thread

    def stop(self) -> None:
        self.processor.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "processor did not stop"


def start_processor(
    settings: Settings,
    instance_id: str = "p0",
    expect_partitions: int | None = None,
    clients: ProcessorClients | None = None,
    tuning: ProcessorTuning | None = None,
) -> ThreadedProcessor:
    """A processor in a thread of the test process, returned once it owns partitions.

    `clients` and `tuning` go to the wiring: the seam where a test injects client faults.
    """
    processor = build_processor(with_test_key(settings), instance_id, max_batch=500,
                                clients=clients, tuning=tuning)
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    want = settings.partitions if expect_partitions is None else expect_partitions
    deadline = time.monotonic() + 60
    while len(processor.group.owned) < want:
        assert thread.is_alive(), "processor died during start"
        assert time.monotonic() < deadline, "processor got no partitions in 60s"
        time.sleep(0.05)
    return ThreadedProcessor(processor, thread)


def cli_args(settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cli.main",
        "--bootstrap",
        settings.bootstrap,
        "--topic-prefix",
        settings.topic_prefix,
        "--partitions",
        str(settings.partitions),
    ]


def spawn_processor(settings: Settings, instance_id: str, log: Path) -> subprocess.Popen[bytes]:
    """`ledger serve` as a real process (for kill -9)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                *cli_args(settings),
                "-v",
                "serve",
                "--instance-id",
                instance_id,
                "--max-batch",
                "200",
            ],
            stdout=out,
            stderr=out,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1",
                 ENV_CREDIT_KEY: with_test_key(settings).credit_key},
        )


def wait_for_ownership(log: Path, times: int, timeout: float = 60) -> None:
    """Until a spawned processor has logged taking partitions `times` times."""
    deadline = time.monotonic() + timeout
    while log.read_text().count("owns partitions [0, 1, 2]") < times:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def journal(settings: Settings) -> list[JournalEntry]:
    entries = []
    for record in read_journal(settings, Codec()):
        assert record.entry is not None, record.error
        entries.append(record.entry)
    return entries


def latest(settings: Settings, topic_name: str, schema: str) -> dict[str, dict[str, object]]:
    """The last committed record per key of a topic (a compacted view)."""
    return latest_by_key(settings, topic_name, schema)


def wait_for_processor_idle(settings: Settings, timeout: float = 60) -> None:
    """Until the processor group has committed every command, routed credits included."""
    deadline = time.monotonic() + timeout
    while pending_commands(settings):
        assert time.monotonic() < deadline, "processor still has unprocessed commands"
        time.sleep(0.2)


def snapshot_balances(settings: Settings) -> dict[str, int]:
    return {k: int(v["balance"]) for k, v in latest(settings, "balances", "balance").items()}  # type: ignore[call-overload]


def party_fold(entries: list[JournalEntry]) -> dict[str, int]:
    """Balances of user and room accounts folded from the journal."""
    out: dict[str, int] = {}
    for entry in entries:
        for p in entry.postings:
            if not p.account.startswith("system:"):
                out[p.account] = out.get(p.account, 0) + p.amount
    return out
