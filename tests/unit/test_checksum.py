"""The balance checksum: order-independent, sensitive to every row, fixed by its definition."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given
from hypothesis import strategies as st

from projections.checksum import balance_checksum, row_hash

rows_strategy = st.lists(
    st.tuples(st.text(min_size=1, max_size=20), st.integers(-(2**62), 2**62)),
    max_size=30, unique_by=lambda r: r[0])


def test_empty_is_zero() -> None:
    assert balance_checksum([]) == "0" * 16


def test_matches_its_definition() -> None:
    rows = [("user:a", 10), ("system:rewards", -10), ("room:r", 0)]
    total = sum(int.from_bytes(hashlib.sha256(f"{a}\x00{b}".encode()).digest()[:8], "big")
                for a, b in rows)
    assert balance_checksum(rows) == format(total % 2**64, "016x")


@given(rows_strategy, st.randoms())
def test_order_does_not_matter(rows: list[tuple[str, int]], rnd: random.Random) -> None:
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    assert balance_checksum(shuffled) == balance_checksum(rows)


@given(rows_strategy.filter(bool), st.integers(1, 1000))
def test_any_changed_balance_changes_it(rows: list[tuple[str, int]], delta: int) -> None:
    changed = [(rows[0][0], rows[0][1] + delta), *rows[1:]]
    assert balance_checksum(changed) != balance_checksum(rows)


def test_account_and_balance_are_separated() -> None:
    # "a1" with 23 must not collide with "a" with 123: the NUL separates them.
    assert row_hash("a1", 23) != row_hash("a", 123)


def test_missing_row_changes_it() -> None:
    rows = [("user:a", 1), ("user:b", 2)]
    assert balance_checksum(rows[:1]) != balance_checksum(rows)
