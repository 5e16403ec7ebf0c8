"""Verify's independent reading of the journal (crosscheck.py) in worker processes.

fastavro's generic reader costs several times the replay's compiled one per event (on
a 1M-event journal on two cores here, ~30 s of CPU against the ~6 s all of verify took
before), so read in verify's own process it would multiply verify's time. Worker
processes, each with its own consumer over a share of the journal's partitions, read it
while verify's process runs its other checks, on every core.
Each worker sends back its partial balances and id hashes (8 bytes per id, see
crosscheck.HashLog); verify merges them and looks for repeats over the whole journal.
Like crosscheck.py, nothing here imports the hot decoders.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from ledger.errors import InfrastructureError
from ledger.kafka import make_consumer
from ledger.settings import Settings
from ledger.wire import Codec
from projections.crosscheck import CrossCheck, Partial
from projections.log import Ranges, read_ranges

POLL_S = 1.0


def default_workers(partitions: int, most: int) -> int:
    """One worker per core (at most `most`, at least one, at most one per partition).

    Not one core fewer for verify's own reading: it ends long before the workers' (about
    a fifth of their CPU), and the core it leaves would then idle. On two cores, two workers
    took 1M events in 29 s here, one in 34 s."""
    cores = os.cpu_count() or 1
    return max(1, min(cores, most, partitions))


def shares(ranges: Ranges, workers: int) -> list[Ranges]:
    """The partitions dealt round-robin over the workers (empty shares dropped)."""
    out: list[Ranges] = [{} for _ in range(workers)]
    for i, key in enumerate(sorted(ranges)):
        out[i % workers][key] = ranges[key]
    return [s for s in out if s]


def read_share(settings: Settings, ranges: Ranges, as_of: int | None) -> Partial:
    """One worker's reading: its partitions through crosscheck, in this process."""
    cross = CrossCheck(settings.topic("events"), Codec(), as_of)
    # A small prefetch queue, as the replay's decoders: memory, not speed, is at stake.
    consumer = make_consumer(settings, None, **{"queued.max.messages.kbytes": 1024})
    try:
        for msgs in read_ranges(consumer, settings, ranges):
            cross.add(msgs)
    finally:
        consumer.close()
    return cross.partial()


def _work(settings: Settings, ranges: Ranges, as_of: int | None, out: Any) -> None:
    """A worker's whole life: its partial result, or the error that stopped it."""
    try:
        out.put(("done", read_share(settings, ranges, as_of)))
    except BaseException as e:  # the parent re-raises it
        out.put(("error", e))


class CrossReading:
    """Worker processes reading the journal's ranges; `result` merges what they found."""

    def __init__(self, settings: Settings, ranges: Ranges, as_of: int | None,
                 workers: int | None = None) -> None:
        self.settings = settings
        self.as_of = as_of
        todo = {k: r for k, r in ranges.items() if r[0] < r[1]}
        self.shares = shares(todo, workers or default_workers(
            len(todo), settings.tuning.verify_max_workers))
        ctx = mp.get_context("spawn")  # never fork a process that runs librdkafka threads
        self.out: Any = ctx.Queue(maxsize=len(self.shares) or 1)
        self.procs: list[BaseProcess] = [
            ctx.Process(target=_work, args=(settings, share, as_of, self.out),
                        name=f"ledger-verify-{i}", daemon=True)
            for i, share in enumerate(self.shares)]

    def __enter__(self) -> CrossReading:
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
            p.join(5)
        self.out.close()
        self.out.join_thread()

    def result(self, codec: Codec | None = None) -> CrossCheck:
        """Every worker's partial result merged (waits for them)."""
        cross = CrossCheck(self.settings.topic("events"), codec, self.as_of)
        running = len(self.procs)
        while running:
            try:
                kind, payload = self.out.get(timeout=POLL_S)
            except queue_mod.Empty:
                self._check_alive()
                continue
            if kind == "error":
                raise payload
            cross.merge(payload)
            running -= 1
        return cross

    def _check_alive(self) -> None:
        dead = [p for p in self.procs if p.exitcode not in (None, 0)]
        if dead:
            raise InfrastructureError(f"verify's reader process {dead[0].name} died "
                                      f"(exit code {dead[0].exitcode})")
