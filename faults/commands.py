"""The random study-room command stream: one generator for the fault runner and the tests.

Users earn for verified study, spend, join rooms paying a fee, and rooms spend what
they collected; amounts are small enough that some spends and joins are refused for
lack of points. The same seed always gives the same commands.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from ledger.domain import Actor, Command, Earn, Join, Spend


def random_commands(seed: int, count: int, users: int, rooms: int,
                    id_prefix: str) -> Iterator[Command]:
    """`count` commands over user:u0.. and room:r0.., ids `<id_prefix>-<n>`."""
    rng = random.Random(seed)
    for n in range(count):
        user, room = f"user:u{rng.randrange(users)}", f"room:r{rng.randrange(rooms)}"
        cid, pick = f"{id_prefix}-{n}", rng.random()
        if pick < 0.35:
            yield Earn(command_id=cid, actor=Actor.SYSTEM, reason="study verified",
                       account=user, amount=rng.randint(1, 50))
        elif pick < 0.65:
            yield Spend(command_id=cid, actor=Actor.USER, reason="spend", account=user,
                        amount=rng.randint(1, 80))
        elif pick < 0.9:
            yield Join(command_id=cid, actor=Actor.USER, reason="join", user=user, room=room,
                       fee=rng.randint(1, 60))
        else:
            yield Spend(command_id=cid, actor=Actor.ADMIN, reason="room spend", account=room,
                        amount=rng.randint(1, 40))
