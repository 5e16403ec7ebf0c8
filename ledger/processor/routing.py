"""The partition of a record key, as every ledger producer picks it (murmur2), cached."""

from __future__ import annotations

from ledger.kafka import partition_for

# Partitions of recent record keys: murmur2 in Python costs more than deciding a command.
_ROUTE_CACHE_KEYS = 100_000
_ROUTE_CACHE_KEY_BYTES = 256


class Router:
    """The partition every ledger producer picks for a key (cached for short keys)."""

    def __init__(self) -> None:
        self.partitions = 0  # of the commands topic, known once the processor runs
        self._routes: dict[bytes, int] = {}

    def key(self, key: bytes) -> int:
        routes = self._routes
        found = routes.get(key)
        if found is None:
            found = partition_for(key, self.partitions)
            if len(key) <= _ROUTE_CACHE_KEY_BYTES:
                if len(routes) >= _ROUTE_CACHE_KEYS:
                    routes.clear()
                routes[key] = found
        return found

    def account(self, account: str) -> int:
        return self.key(account.encode())
