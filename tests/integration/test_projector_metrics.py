"""`ledger project --metrics-port`: Prometheus metrics and /healthz from a real projector."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ledger.settings import Settings
from tests.integration.journal_factory import ledger_argv, write_journal

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {f.name: [(s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(text)}


def test_projector_metrics_and_health(make_settings: Callable[..., Settings],
                                      tmp_path: Path) -> None:
    settings = make_settings(partitions=3)
    journal = write_journal(settings, 2_000, txn_size=500)
    port = _free_port()
    url = f"duckdb:///{tmp_path / 'm.duckdb'}"
    proc = subprocess.Popen([*ledger_argv(settings, url), "project", "--batch-ms", "50",
                             "--metrics-port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                metrics = _scrape(port)
                if metrics["ledger_projected_events"][0][1] >= len(journal.events):
                    break
            except (OSError, KeyError, IndexError):
                pass
            assert time.monotonic() < deadline, "projector never reported all events"
            time.sleep(0.2)
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                                   timeout=5).read())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert metrics["ledger_projected_events"][0][1] == len(journal.events)
    lag = metrics["ledger_consumer_lag"]
    assert {labels["partition"] for labels, _ in lag} >= {
        f"{settings.topic('events')}[{p}]" for p in range(3)}
    assert all(value == 0 for _, value in lag)
    assert metrics["ledger_dead_letters"][0][1] == 0
    assert health["ok"] is True and health["batches"] >= 1
