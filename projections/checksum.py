"""An order-independent checksum of balances, the same for every store.

Each (account, balance) row hashes to the first 8 bytes of
sha256(f"{account}\\x00{balance}"), read big-endian; the checksum is their sum
modulo 2**64 as 16 hex digits. A sum does not depend on row order, so DuckDB,
Postgres and an in-memory replay agree whenever they hold the same rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

MOD = 2**64


def row_hash(account: str, balance: int) -> int:
    digest = hashlib.sha256(f"{account}\x00{balance}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def balance_checksum(rows: Iterable[tuple[str, int]]) -> str:
    total = 0
    for account, balance in rows:
        total += row_hash(account, int(balance))
    return f"{total % MOD:016x}"
