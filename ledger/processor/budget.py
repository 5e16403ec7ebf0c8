"""How often the processor may replace a failed client before it gives up."""

from __future__ import annotations

import time
from collections.abc import Callable

from ledger.errors import InfrastructureError

# A consumer that fails fatally, or a producer that cannot finish its transaction, is replaced
# at most this often before the service gives up. A rate, not a lifetime count: a broker
# failover can fence a static member by its own instance id (a join response lost with the
# coordinator), once per failover; a real twin fences the transactional producer as well,
# and a tight loop spends the budget within seconds. 5 in 600 s ended a processor that
# rode out a coordinator kill every minute.
MAX_REJOINS = 5
REJOIN_WINDOW_S = 120.0


class RestartBudget:
    """At most MAX_REJOINS replacements in REJOIN_WINDOW_S, or InfrastructureError."""

    def __init__(self, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.clock = what, clock
        self._times: list[float] = []

    def spend(self, last: str) -> None:
        now = self.clock()
        self._times = [t for t in self._times if now - t < REJOIN_WINDOW_S] + [now]
        if len(self._times) > MAX_REJOINS:
            raise InfrastructureError(
                f"{self.what} {len(self._times)} times in {REJOIN_WINDOW_S:.0f}s, last: {last}"
            )
