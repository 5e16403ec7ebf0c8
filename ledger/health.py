"""What a running service keeps for its probes and operators: heartbeat, latencies, lifecycle.

Plain Python and cheap: the loops of `serve` and `project` touch these once per batch or
loop iteration, never per message; the metrics server (ledger/metrics.py) reads them from
its own thread.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ledger.settings import Tuning

DEFAULT_READY_MAX_LAG = 10_000
DEFAULT_METRICS_HOST = "127.0.0.1"
# Upper bounds of the batch-latency buckets, in seconds (+Inf is implied).
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The start and stop lines of `serve` and `project`: shown at the default log level.
LIFECYCLE = logging.getLogger("ledger.lifecycle")


@dataclass(frozen=True)
class Endpoint:
    """Where a service's metrics server listens, and the most lag its /readyz accepts."""

    port: int
    host: str = DEFAULT_METRICS_HOST
    ready_max_lag: int = DEFAULT_READY_MAX_LAG


class Heartbeat:
    """When the service's loop last went round; `alive()` answers /healthz."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 stall_after_s: float = Tuning.stall_after_s) -> None:
        """`stall_after_s`: a loop that has not gone round for this long is stuck."""
        self._clock = clock
        self.stall_after_s = stall_after_s
        self.last: float | None = None  # None: the loop is not running

    def beat(self) -> None:
        self.last = self._clock()

    def stop(self) -> None:
        self.last = None

    def alive(self) -> tuple[bool, str]:
        last = self.last
        if last is None:
            return False, "loop not running"
        age = self._clock() - last
        if age > self.stall_after_s:
            return False, f"loop stuck for {age:.0f}s"
        return True, ""


class LatencyHistogram:
    """Counts of observed durations per bucket; one observe() per batch."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """Prometheus buckets: (upper bound, observations at or below it), and the sum."""
        counts, total = list(self.counts), self.sum  # one consistent copy for a scrape
        buckets, running = [], 0
        for bound, n in zip((*(repr(b) for b in self.bounds), "+Inf"), counts, strict=True):
            running += n
            buckets.append((bound, float(running)))
        return buckets, total


def lag_problem(lag: Mapping[str, int], max_lag: int) -> str:
    """Why the lag (records behind, per "topic[partition]") makes a service not ready
    ('' if it does not)."""
    if not lag:
        return ""
    where, worst = max(lag.items(), key=lambda kv: kv[1])
    if worst <= max_lag:
        return ""
    return f"consumer lag {worst} records on {where} > --ready-max-lag {max_lag}"
