"""A crash schedule drawn from a seed: which process dies after how many commands."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Kill:
    after_commands: int  # SIGKILL once the client has sent this many commands
    target: str  # "processor" or "projector"


def draw_schedule(seed: int, commands: int, kills: int) -> list[Kill]:
    """The same seed, size and kill count always give the same schedule."""
    rng = random.Random(seed)
    points = sorted(rng.sample(range(commands // 50, commands), kills))
    return [Kill(p, rng.choice(("processor", "projector"))) for p in points]
