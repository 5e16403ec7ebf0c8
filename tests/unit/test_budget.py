"""The rejoin budget: a rate of replacements, not a lifetime count."""

from __future__ import annotations

import pytest

from ledger.errors import InfrastructureError
from ledger.processor.budget import RestartBudget


def test_one_replacement_a_minute_lasts_for_ever() -> None:
    now = [0.0]
    spent = RestartBudget("consumer failed fatally", clock=lambda: now[0])
    for _ in range(30):  # a broker failover every minute for half an hour
        spent.spend("fenced")
        now[0] += 60.0


def test_a_tight_loop_ends_the_run() -> None:
    now = [0.0]
    spent = RestartBudget("consumer failed fatally", clock=lambda: now[0])
    with pytest.raises(InfrastructureError, match="consumer failed fatally 6 times"):
        for _ in range(6):
            spent.spend("fenced")
            now[0] += 1.0
