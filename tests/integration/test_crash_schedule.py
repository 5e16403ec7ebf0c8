"""Seeded SIGKILLs of the processor and the projector lose and duplicate nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.runner import FaultConfig, run

pytestmark = pytest.mark.integration


def test_small_crash_schedule(bootstrap: str, tmp_path: Path) -> None:
    cfg = FaultConfig(
        bootstrap=bootstrap,
        store=f"duckdb:///{tmp_path / 'f.duckdb'}",
        workdir=tmp_path,
        seed=11,
        commands=5000,
        kills=6,
        users=200,
        rooms=20,
        partitions=3,
    )
    report = run(cfg)
    assert report.processor_kills + report.projector_kills == 6
    assert report.commands_sent == 5000
    assert report.accepted > 1000 and report.rejected > 0
    assert (report.lost, report.duplicated, report.problems) == (0, 0, [])


@pytest.mark.slow
def test_million_commands_fifty_kills(bootstrap: str, postgres_url: str, tmp_path: Path) -> None:
    """The README's reliability figures: 1M commands, 50 SIGKILLs, into Postgres."""
    cfg = FaultConfig(bootstrap=bootstrap, store=postgres_url, workdir=tmp_path, seed=2026)
    report = run(cfg)
    assert report.processor_kills + report.projector_kills == 50
    assert (report.lost, report.duplicated, report.problems) == (0, 0, [])
