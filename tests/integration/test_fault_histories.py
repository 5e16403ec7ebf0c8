"""Fault scenarios judged by a Jepsen-style history checker (faults/checker.py).

Each scenario runs real `ledger serve` processes, logs every command a client sends as
invoked, then ok / failed (with its reason) / unknown, and holds that history against the
committed journal and balance changelog, read independently of the processor:

- zombie: an instance frozen with SIGSTOP past its session timeout while commands flow;
  the other takes its partitions; when it wakes, whatever it writes for them must be
  fenced. A small version runs by default (under a minute); the full one is slow.
- rebalance storm: instances join and leave every 10-20 s over 200,000 commands on
  12 partitions; every routed credit applied once, and no rejection the history proves
  false (no `unknown_account` for an account opened before, no `misrouted`).
- coordinator kill: a private 3-broker cluster; the broker hosting the processor's
  transaction coordinator is SIGKILLed during commits and restarted, 20 times.

Slow ones: `pytest -m slow tests/integration/test_fault_histories.py -s`. Each writes its
report (history summary, violations, timeline, instance exits) to <tmp>/report.json and
prints it with -s.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from devstack import kafka as dkafka
from faults.coordinator import CoordinatorConfig, run_coordinator
from faults.harness import ScenarioReport
from faults.storm import StormConfig, run_storm
from faults.zombie import ZombieConfig, run_zombie
from ledger.settings import default_home

pytestmark = pytest.mark.integration


def _reported(report: ScenarioReport, workdir: Path) -> ScenarioReport:
    report.write(workdir / "report.json")
    for exit_ in report.exits:
        print(f"instance exit: {exit_}")
    return report


def _assert_exactly_once(report: ScenarioReport) -> None:
    """Lost and duplicated first: the failure names the command ids."""
    h = report.history
    assert (report.lost, report.duplicated) == (0, 0), report.summary()
    for check in ("rejected_applied", "phantom", "payload", "unbalanced"):
        assert h.counts[check] == 0, report.summary()
    assert report.idle, "the processors never finished the commands\n" + report.summary()


def test_zombie_small_is_fenced(bootstrap: str, tmp_path: Path) -> None:
    """One instance frozen idle for 18 s (session timeout 10 s) on three partitions while
    the stream goes on: the other takes its partitions and decides their commands; then
    the frozen one wakes, believing for a moment it still owns them, and gets them back.
    Nothing lost, nothing decided twice, and its state must include what the other wrote."""
    cfg = ZombieConfig(bootstrap=bootstrap, workdir=tmp_path, seed=7, partitions=3, users=60,
                       rooms=6, window=3000, pauses=1, modes=("idle",),
                       pause_s=(18.0, 18.0), warmup_s=3.0, tail_s=6.0, idle_timeout_s=120.0,
                       outcome_timeout_s=20.0)
    report = _reported(run_zombie(cfg), tmp_path)
    pause = report.notes["pause 1"]
    assert isinstance(pause, dict) and pause["victim"] == "zombie-a"
    assert report.sent > 1000
    _assert_exactly_once(report)
    h = report.history
    assert h.counts["overdrawn"] + h.counts["final_balance"] + h.counts["below_floor"] == 0, \
        report.summary()
    assert h.valid, report.summary()


@pytest.mark.slow
def test_zombie_full(bootstrap: str, tmp_path: Path) -> None:
    """Eight freezes of 16-26 s under a saturating stream on six partitions, alternating
    instances, at random moments and right after a commit of the frozen instance."""
    report = _reported(run_zombie(ZombieConfig(bootstrap=bootstrap, workdir=tmp_path,
                                               seed=2026)), tmp_path)
    assert len([k for k in report.notes if k.startswith("pause")]) == 8
    _assert_exactly_once(report)
    h = report.history
    assert h.counts["overdrawn"] + h.counts["final_balance"] + h.counts["below_floor"] == 0, \
        report.summary()
    assert h.valid, report.summary()


@pytest.mark.slow
def test_rebalance_storm(bootstrap: str, tmp_path: Path) -> None:
    """200,000 commands on 12 partitions while instances come and go every 10-20 s."""
    report = _reported(run_storm(StormConfig(bootstrap=bootstrap, workdir=tmp_path,
                                             seed=2026)), tmp_path)
    changes = report.notes["membership changes"]
    assert isinstance(changes, list) and len(changes) >= 5, changes
    assert report.sent == 200_000
    _assert_exactly_once(report)
    h = report.history
    # Every routed credit applied once: each room's latest snapshot equals its fold.
    assert h.counts["credit"] + h.counts["credit_twice"] == 0, report.summary()
    assert h.counts["final_balance"] + h.counts["below_floor"] == 0, report.summary()
    # Rejections the history proves false.
    assert h.reasons["misrouted"] == 0, report.summary()
    assert not {c for c in h.counts if c.startswith("reason_")}, report.summary()
    assert h.valid, report.summary()


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 20 broker restarts in a 3-node cluster on 2 cores: ~30 min loaded
def test_coordinator_kill(tmp_path: Path) -> None:
    """Twenty SIGKILLs of the broker hosting the processor's transaction coordinator."""
    jars = dkafka.default_jars_dir(default_home())
    if shutil.which("java") is None or not any(jars.glob("kafka_2.13-*.jar")):
        pytest.skip(f"needs Java and the Kafka jars in {jars}")
    report = _reported(run_coordinator(CoordinatorConfig(workdir=tmp_path, seed=2026,
                                                         kills=20, jars_dir=jars)), tmp_path)
    kills = report.notes["kills"]
    assert isinstance(kills, list) and len(kills) >= 20
    _assert_exactly_once(report)
    assert report.history.valid, report.summary()
    # The processor rides out a coordinator failover (commits by the book, resync): it
    # does not exit and wait for a supervisor to start it again.
    assert not report.exits, "\n".join(
        f"{e.at_s}s exit {e.code}: {e.last_lines[-1] if e.last_lines else ''}"
        for e in report.exits)
