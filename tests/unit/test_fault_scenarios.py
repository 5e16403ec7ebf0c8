"""Pure parts of the history scenarios: seeded workloads and the coordinator lookup."""

from __future__ import annotations

from collections import Counter

from faults.coordinator import java_hash, txn_state_partition
from faults.workload import opens, storm_commands
from ledger.domain import Earn, Join, OpenAccount, Spend


def test_storm_workload_is_seeded() -> None:
    assert list(storm_commands(3, 2000, 50, 5, "s")) == list(storm_commands(3, 2000, 50, 5, "s"))
    assert list(storm_commands(3, 2000, 50, 5, "s")) != list(storm_commands(4, 2000, 50, 5, "s"))


def test_storm_workload_opens_every_account_early_among_the_rest() -> None:
    cmds = list(storm_commands(1, 20_000, 200, 20, "s", open_span=0.1))
    assert len(cmds) == 20_000
    assert len({c.command_id for c in cmds}) == 20_000
    opened = [n for n, c in enumerate(cmds) if isinstance(c, OpenAccount)]
    assert len(opened) == 220 and max(opened) < 2000
    assert len({c.deciding_account for c in cmds if isinstance(c, OpenAccount)}) == 220
    kinds = Counter(type(c).__name__ for c in cmds if not isinstance(c, OpenAccount))
    assert set(kinds) == {"Earn", "Join", "Spend"}
    assert all(c.account.startswith("room:") for c in cmds if isinstance(c, Spend))
    assert all(c.account.startswith("user:") for c in cmds if isinstance(c, Earn))
    assert all(c.user.startswith("user:") and c.room.startswith("room:")
               for c in cmds if isinstance(c, Join))
    # Some commands come before their account's open: honest unknown_account rejections.
    first_open = {c.deciding_account: n for n, c in enumerate(cmds) if isinstance(c, OpenAccount)}
    early = [n for n, c in enumerate(cmds) if not isinstance(c, OpenAccount)
             and n < first_open[c.deciding_account]]
    assert early


def test_opens_grant_users_only() -> None:
    cmds = opens(3, 2, "p")
    assert [c.account for c in cmds] == ["user:u0", "user:u1", "user:u2", "room:r0", "room:r1"]
    assert [c.grant for c in cmds] == [100, 100, 100, 0, 0]


def test_java_string_hash_and_the_transaction_state_partition() -> None:
    # Values of Java's "...".hashCode().
    assert java_hash("hello") == 99162322
    assert java_hash("") == 0
    assert java_hash("polygenelubricants") == -2**31
    assert txn_state_partition("polygenelubricants") == 0  # Utils.abs(MIN_VALUE) is 0
    assert txn_state_partition("hello") == 99162322 % 50
    assert all(0 <= txn_state_partition(f"p.processor.{i}") < 50 for i in range(100))
