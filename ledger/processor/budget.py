"""How often the processor may replace a failed client before it gives up."""

from __future__ import annotations

import time

from ledger.errors import InfrastructureError

# A consumer that fails fatally, or a producer that cannot finish its transaction, is replaced
# at most this often before the service gives up.
MAX_REJOINS = 5
REJOIN_WINDOW_S = 600.0


class RestartBudget:
    """At most MAX_REJOINS replacements in REJOIN_WINDOW_S, or InfrastructureError."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._times: list[float] = []

    def spend(self, last: str) -> None:
        now = time.monotonic()
        self._times = [t for t in self._times if now - t < REJOIN_WINDOW_S] + [now]
        if len(self._times) > MAX_REJOINS:
            raise InfrastructureError(
                f"{self.what} {len(self._times)} times in {REJOIN_WINDOW_S:.0f}s, last: {last}"
            )
