"""The benchmark keeps working: a small `python -m bench` completes and reports every figure.

Numbers are never asserted here (they depend on the machine and what else runs on
it); only that each figure was measured, is positive, and has its ratios.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import FIGURES

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MACHINE_KEYS = ("cpu", "cores", "ram_gb", "python", "confluent_kafka", "librdkafka", "duckdb",
                "postgres", "kafka")


def test_small_bench_reports_every_figure(bootstrap: str, postgres_url: str,
                                          tmp_path: Path) -> None:
    out = tmp_path / "bench-out"
    argv = [sys.executable, "-m", "bench", "--events", "50000", "--bootstrap", bootstrap,
            "--postgres-url", postgres_url, "--out", str(out), "--partitions", "3",
            "--baseline-sample", "200", "--commands", "5000", "--accounts", "500",
            "--warmup-commands", "1000", "--warmup-seconds", "1", "--latency-rate", "500",
            "--latency-seconds", "2", "--quiet-wait", "0", "-q"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    report = json.loads((out / "report.json").read_text())
    assert report["ok"] is True
    assert set(report["figures"]) == set(FIGURES)
    for key, fig in report["figures"].items():
        assert fig["error"] is None, (key, fig["error"])
        assert fig["value"] > 0, key
        if fig["kind"] == "rate":
            assert fig["ratio_to_raw_consume"] > 0, key
            assert fig["ratio_to_baseline"] > 0, key
    for key in ("processor", "latency_p99"):  # the warm-up round's figures are kept
        details = report["figures"][key]["details"]
        assert details["warmup_commands"] == 1000
        assert details["warmup_per_s"] > 0 and details["warmup_p99_ms"] > 0
    assert len(report["targets"]) == 7
    assert all(t["met"] in (True, False) for t in report["targets"])
    for key in MACHINE_KEYS:
        assert report["machine"].get(key), key

    markdown = (out / "report.md").read_text()
    assert "| Figure | Value |" in markdown and "| Target |" in markdown
    assert markdown in proc.stdout  # the table is also printed
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "replay.duckdb").exists()  # removed unless --keep


def test_skipped_phases_do_not_run(bootstrap: str, postgres_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench-skip"
    skipped = ["kafka-perf", "replay-postgres", "baseline", "processor"]
    argv = [sys.executable, "-m", "bench", "--events", "20000", "--bootstrap", bootstrap,
            "--postgres-url", postgres_url, "--out", str(out), "--partitions", "3",
            "--quiet-wait", "0", "-q", *(a for s in skipped for a in ("--skip", s))]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240,
                          check=False)
    report = json.loads((out / "report.json").read_text())
    ran = [p["name"] for p in report["phases"]]
    assert ran == ["generate", "raw", "replay-duckdb"], proc.stderr[-2000:]
    measured = {k for k, f in report["figures"].items() if f.get("value")}
    assert {"raw_consume", "replay_duckdb"} <= measured
    assert not measured & {"processor", "latency_p99", "seed_baseline", "replay_postgres",
                           "kafka_consumer_perf"}
    assert report["ok"] is False  # an incomplete run says so
