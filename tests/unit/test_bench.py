"""The bench's pure parts: generated journals are valid, tool output parses, targets judge."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from bench import replay as bench_replay
from bench.consume import parse_perf_output
from bench.journal import START_MS, Shape, events
from bench.processor import _pct
from bench.report import FIGURES, Report
from ledger.wire import Codec

PERF_OUTPUT = """\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, \
rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2026-11-25 20:03:23:991, 2026-11-25 20:03:25:255, 145.0909, 114.7871, 1000000, 791139.2405, \
325, 939, 154.5164, 1064962.7263
"""


def test_generated_events_are_valid_balanced_and_never_overdraw(codec: Codec) -> None:
    shape = Shape.for_events(5_000, seed=3)
    balances: dict[str, int] = {}
    seen: set[str] = set()
    last_ms = START_MS - 1
    kinds = set()
    for key, value, kind in events(shape, codec):
        rec = codec.decode_as("event", value)
        assert rec["kind"] == kind
        kinds.add(kind)
        postings = rec["postings"]
        assert sum(p["amount"] for p in postings) == 0
        assert uuid.UUID(rec["event_id"]).version == 5  # as the processor's ids
        assert uuid.UUID(rec["command_id"]).version == 4
        assert rec["event_id"] not in seen
        seen.add(rec["event_id"])
        assert rec["occurred_at"] > last_ms
        last_ms = rec["occurred_at"]
        debited = [p["account"] for p in postings if p["amount"] < 0]
        party = next((a for a in debited if not a.startswith("system:")),
                     next(p["account"] for p in postings if p["amount"] > 0))
        assert key == party.encode()
        for p in postings:
            balances[p["account"]] = balances.get(p["account"], 0) + p["amount"]
            if not p["account"].startswith("system:"):
                assert balances[p["account"]] >= 0, rec
    assert kinds == {"GRANTED", "EARNED", "SPENT", "JOINED"}
    assert len(seen) == shape.events


def test_events_are_deterministic(codec: Codec) -> None:
    shape = Shape.for_events(300, seed=5)
    assert list(events(shape, codec)) == list(events(shape, codec))


def test_shape_scales_accounts_down_for_small_journals() -> None:
    assert (Shape.for_events(1_000_000).users, Shape.for_events(1_000_000).rooms) == (100_000,
                                                                                      1_000)
    small = Shape.for_events(50_000)
    assert small.users == 5_000 and small.rooms == 50


def test_consumer_performance_output_parses() -> None:
    perf = parse_perf_output("some warning\n" + PERF_OUTPUT)
    assert perf.rate.records == 1_000_000
    assert perf.rate.seconds == pytest.approx(0.939)
    assert perf.rate.per_s == pytest.approx(1_064_963, rel=1e-3)
    assert perf.total_per_s == pytest.approx(791_139.2405)
    assert perf.rebalance_ms == 325


def test_consumer_performance_garbage_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="unexpected ConsumerPerformance output"):
        parse_perf_output("Exception in thread main")


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (_pct(values, 50), _pct(values, 99), _pct(values, 100)) == (50.0, 99.0, 100.0)
    assert _pct([7.0], 99) == 7.0


def _report(**values: float) -> Report:
    report = Report(config={"events": 1_000_000, "latency_rate": 2000})
    for key, value in values.items():
        report.set(key, value, growth_mb=1.0)
    return report


def test_targets_are_judged_with_ratios() -> None:
    report = _report(raw_consume=400_000, seed_baseline=500, replay_duckdb=300_000,
                     replay_postgres=90_000, processor=25_000, latency_p99=80,
                     replay_duckdb_peak_rss=250, replay_postgres_peak_rss=200)
    met = {t.name: t.met for t in report.targets()}
    assert met["replay into DuckDB >= 250,000 events/s"] is True
    assert met["replay into DuckDB >= 0.5 x raw consume"] is True  # 0.75
    assert met["replay into Postgres >= 100,000 events/s"] is False
    assert met["replay into DuckDB >= 300 x seed-style baseline"] is True  # 600x
    assert met["processor >= 20,000 commands/s"] is True
    assert met["p99 < 100 ms at 2,000 commands/s offered"] is True
    assert met["replay memory <= 300 MB and flat in the event count"] is True
    assert report.ratio("replay_duckdb", "seed_baseline") == pytest.approx(600)
    assert report.ratio("latency_p99", "raw_consume") is None  # not a rate


def test_missing_figures_are_not_measured_and_the_run_is_incomplete() -> None:
    report = _report(raw_consume=400_000)
    report.fail("replay_duckdb", "RuntimeError: boom")
    assert not report.ok()
    assert all(t.met is None for t in report.targets() if t.figure != "raw_consume")
    text = report.markdown()
    assert "error: RuntimeError: boom" in text and "not measured" in text


def test_every_figure_has_a_label_unit_and_kind() -> None:
    for key, (label, unit, kind) in FIGURES.items():
        assert label and unit and kind in ("rate", "memory", "latency"), key


def test_a_process_peak_is_its_own_high_water_mark() -> None:
    """VmHWM, not wait4's ru_maxrss (which counts the parent's memory at exec)."""
    ballast = bytearray(200 * 2**20)  # resident in this process while the child starts
    ballast[::4096] = b"\1" * len(range(0, len(ballast), 4096))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    try:
        for _ in range(100):  # until the interpreter has replaced the forked image
            if psutil.Process(child.pid).cmdline()[-1:] == ["import time; time.sleep(2)"]:
                break
            time.sleep(0.01)
        time.sleep(0.2)
        own = bench_replay._hwm_mb(child.pid)
        assert 1 < own < 100  # a bare interpreter, not this process's 200 MB
        assert bench_replay._hwm_mb(os.getpid()) >= psutil.Process().memory_info().rss / 2**20
    finally:
        child.kill()
        child.wait()
    assert bench_replay._hwm_mb(child.pid) == 0.0  # gone
    assert len(ballast) == 200 * 2**20
