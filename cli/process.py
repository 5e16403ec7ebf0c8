"""Process-wide switches, set only by entry points: signal handlers of the services and
the garbage collector and Arrow settings of a bulk read. Library code never sets them."""

from __future__ import annotations

import faulthandler
import gc
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("ledger.cli")


def stop_service_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and Ctrl-C call `stop` (the open batch finishes first); `kill -USR1 <pid>`
    prints every thread's stack to stderr: what a stuck service waits on."""

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.warning("signal %d: finishing the open batch, then stopping", signum)
        stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    faulthandler.register(signal.SIGUSR1, all_threads=True)


@contextmanager
def stop_on_sigterm(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM calls `stop` inside the block; the previous handler is back after it."""

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        stop()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def bulk_read_settings() -> Iterator[None]:
    """GC and Arrow set for reading a whole journal (a replay), restored afterwards."""
    import pyarrow as pa

    # Millions of short-lived rows trigger cyclic GC passes that find nothing to free
    # (1-2.6 s of a 1M replay measured); freeze what exists and collect rarely.
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(100_000, 50, 1000)
    # Arrow's default pool (mimalloc) keeps freed pages: ~60 MB more at a replay's peak
    # here than the system allocator, for no measurable speed.
    pool, cpus = pa.default_memory_pool(), pa.cpu_count()
    pa.set_memory_pool(pa.system_memory_pool())
    # Arrow's group-bys on one thread fewer than cores: each pool thread holds its own
    # buffers (~35 MB at the peak here on two cores) and the writer already runs beside
    # the decoder.
    pa.set_cpu_count(max(1, (os.cpu_count() or 1) - 1))
    try:
        yield
    finally:
        pa.set_cpu_count(cpus)
        pa.set_memory_pool(pool)
        gc.set_threshold(*threshold)
        gc.unfreeze()
