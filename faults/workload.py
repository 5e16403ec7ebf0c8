"""Command streams of the history scenarios (seeded: the same seed sends the same commands)."""

from __future__ import annotations

import random
from collections.abc import Iterator

from ledger.domain import Actor, Command, Earn, Join, OpenAccount, Spend


def accounts(users: int, rooms: int) -> list[str]:
    return [f"user:u{i}" for i in range(users)] + [f"room:r{i}" for i in range(rooms)]


def open_command(account: str, command_id: str, user_grant: int = 100) -> OpenAccount:
    grant = user_grant if account.startswith("user:") else 0
    return OpenAccount(command_id=command_id, actor=Actor.SYSTEM, reason="signup",
                       account=account, grant=grant)


def opens(users: int, rooms: int, id_prefix: str, user_grant: int = 100) -> list[OpenAccount]:
    """Open every user (with a grant) and room (without) of the workload."""
    return [open_command(a, f"{id_prefix}-open-{a}", user_grant) for a in accounts(users, rooms)]


def storm_commands(seed: int, count: int, users: int, rooms: int, id_prefix: str,
                   open_span: float = 0.1, user_grant: int = 100) -> Iterator[Command]:
    """`count` commands: every account's open spread over the first `open_span` of the
    stream, among earns (40%), joins in which a user pays a room (35%) and room spends
    (25%) over all accounts, so early commands meet accounts not open yet (honestly
    rejected as unknown_account) and later ones meet accounts opened long before."""
    rng = random.Random(seed)
    todo = accounts(users, rooms)
    rng.shuffle(todo)
    span = min(count, max(len(todo), int(count * open_span)))
    open_at = dict(zip(sorted(rng.sample(range(span), min(span, len(todo)))), todo,
                       strict=False))
    for n in range(count):
        cid = f"{id_prefix}-{n}"
        account = open_at.get(n)
        if account is not None:
            yield open_command(account, cid, user_grant)
            continue
        user, room, pick = f"user:u{rng.randrange(users)}", f"room:r{rng.randrange(rooms)}", \
            rng.random()
        if pick < 0.40:
            yield Earn(command_id=cid, actor=Actor.SYSTEM, reason="study verified",
                       account=user, amount=rng.randint(1, 50))
        elif pick < 0.75:
            yield Join(command_id=cid, actor=Actor.USER, reason="join", user=user, room=room,
                       fee=rng.randint(1, 60))
        else:
            yield Spend(command_id=cid, actor=Actor.ADMIN, reason="room spend", account=room,
                        amount=rng.randint(1, 40))
