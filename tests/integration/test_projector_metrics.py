"""`ledger project --metrics-port`: Prometheus metrics and /healthz from a real projector."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger.settings import Settings
from tests.integration.endpoints import Samples, free_port, get, get_json, samples, wait_until
from tests.integration.journal_factory import ledger_argv, write_journal

pytestmark = pytest.mark.integration


def test_projector_metrics_and_health(make_settings: Callable[..., Settings],
                                      tmp_path: Path) -> None:
    settings = make_settings(partitions=3)
    journal = write_journal(settings, 2_000, txn_size=500)
    port = free_port()
    url = f"duckdb:///{tmp_path / 'm.duckdb'}"
    proc = subprocess.Popen([*ledger_argv(settings, url), "project", "--batch-ms", "50",
                             "--metrics-port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    events = ("ledger_projected_events_total", ())

    def all_projected() -> Samples | None:
        code, text = get(port, "/metrics")  # nothing listens for a moment after the start
        got = samples(text) if code == 200 else {}
        return got if got.get(events) == len(journal.events) else None

    try:
        metrics = wait_until("the projector to report every event", all_projected)
        code, health = get_json(port, "/healthz")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert code == 200 and health["ok"] is True and health["batches"] >= 1, health
    lag = {labels: v for (name, labels), v in metrics.items()
           if name == "ledger_consumer_lag_records"}
    assert lag == {(("partition", str(p)), ("topic", settings.topic(t))): 0
                   for t in ("accounts", "events") for p in range(3)}
    assert metrics[("ledger_dead_letters_total", ())] == 0
    batches = metrics[("ledger_batches_total", ())]
    # A histogram of every committed batch: as many observations as batches.
    assert metrics[("ledger_batch_latency_seconds_bucket", (("le", "+Inf"),))] == batches >= 1
    assert metrics[("ledger_batch_latency_seconds_count", ())] == batches
