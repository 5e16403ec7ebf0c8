"""A crash schedule is a pure function of its seed."""

from __future__ import annotations

from faults.runner import FaultConfig, commands
from faults.schedule import draw_schedule


def test_same_seed_same_schedule() -> None:
    assert draw_schedule(7, 1_000_000, 50) == draw_schedule(7, 1_000_000, 50)
    assert draw_schedule(7, 1_000_000, 50) != draw_schedule(8, 1_000_000, 50)


def test_schedule_shape() -> None:
    kills = draw_schedule(3, 1_000_000, 50)
    points = [k.after_commands for k in kills]
    assert len(kills) == 50 and points == sorted(points) and len(set(points)) == 50
    assert {k.target for k in kills} == {"processor", "projector"}
    assert points[0] >= 20_000 and points[-1] < 1_000_000


def test_same_seed_same_workload(tmp_path: object) -> None:
    cfg = FaultConfig(
        bootstrap="unused",
        store="unused",
        workdir=tmp_path,  # type: ignore[arg-type]
        seed=5,
        commands=300,
    )
    assert list(commands(cfg)) == list(commands(cfg))
    assert len({c.command_id for c in commands(cfg)}) == 300
