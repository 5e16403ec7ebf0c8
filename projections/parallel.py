"""Reading and decoding ranges of the journal, in this process or in worker processes.

Decoding is CPU-bound Python: threads cannot share it (the GIL), processes can.
`decode_parallel` splits the journal's partitions among worker processes; each
reads its partitions with its own consumer, decodes them and sends Arrow tables
(pickled as Arrow IPC buffers) through a bounded queue. The parent only writes
them, so reading, decoding and the store's bulk insert run on different cores.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

import pyarrow as pa

from ledger.errors import InfrastructureError
from ledger.kafka import make_consumer
from ledger.settings import Settings
from projections.ingest import BadRecord, Ingest
from projections.log import Ranges, read_ranges
from projections.rows import account_table


@dataclass
class Decoded:
    """One decoded batch: audit rows of its events plus what else the batch held."""

    audit: pa.Table
    accounts: pa.Table  # ACCOUNT_SCHEMA: the batch's latest state per account
    bad: list[BadRecord] = field(default_factory=list)
    records: int = 0  # messages read, of both topics
    later: int = 0  # events after as_of, left out
    events: int = 0


def decode_ranges(settings: Settings, ranges: Ranges, as_of: int | None,
                  batch_records: int) -> Generator[Decoded, None, None]:
    """Decoded batches of the ranges, in this process."""
    # A small prefetch queue: 1 MB instead of 16 saved ~70 MB of a replay's peak memory
    # here at no measurable cost in consume rate (the fetcher retries a full queue after
    # fetch.queue.backoff.ms, 2).
    consumer = make_consumer(settings, None, **{"queued.max.messages.kbytes": 1024})
    ingest = Ingest(settings, as_of=as_of)
    try:
        for msgs in read_ranges(consumer, settings, ranges):
            ingest.add(msgs)
            if len(ingest) >= batch_records:
                yield _take(ingest)
        yield _take(ingest)
    finally:
        consumer.close()


def _take(ingest: Ingest) -> Decoded:
    d = Decoded(ingest.audit(), account_table(ingest.accounts.values()), ingest.bad,
                ingest.records, ingest.later, ingest.event_count)
    ingest.reset()
    return d


def split(ranges: Ranges, workers: int, events_topic: str) -> list[Ranges]:
    """Journal partitions round-robin over the workers; every other topic to the first."""
    shares: list[Ranges] = [{} for _ in range(workers)]
    journal = sorted(k for k in ranges if k[0] == events_topic)
    for i, key in enumerate(journal):
        shares[i % workers][key] = ranges[key]
    for key in ranges:
        if key[0] != events_topic:
            shares[0][key] = ranges[key]
    return [s for s in shares if s]


def _work(settings: Settings, ranges: Ranges, as_of: int | None, batch_records: int,
          out: Any) -> None:
    """A worker's whole life: decode its ranges, then say done (or why it failed)."""
    try:
        for batch in decode_ranges(settings, ranges, as_of, batch_records):
            out.put(("batch", batch))
        out.put(("done", None))
    except BaseException as e:  # the parent re-raises it; nothing is lost in a child
        out.put(("error", e))


def decode_parallel(settings: Settings, ranges: Ranges, as_of: int | None,
                    batch_records: int, workers: int) -> Generator[Decoded, None, None]:
    """Decoded batches from `workers` processes, in whatever order they finish."""
    shares = split(ranges, max(1, workers), settings.topic("events"))
    if not shares:
        return
    ctx = mp.get_context("spawn")  # never fork a process that runs librdkafka threads
    out: Any = ctx.Queue(maxsize=settings.tuning.replay_queue_per_worker * len(shares))
    procs = [ctx.Process(target=_work, args=(settings, share, as_of, batch_records, out),
                         name=f"ledger-decode-{i}", daemon=True)
             for i, share in enumerate(shares)]
    for p in procs:
        p.start()
    try:
        yield from _collect(out, procs, settings.tuning.decode_poll_s)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(5)
        out.close()
        out.join_thread()


def _collect(out: Any, procs: Sequence[BaseProcess], poll_s: float) -> Iterator[Decoded]:
    running = len(procs)
    while running:
        try:
            kind, payload = out.get(timeout=poll_s)
        except queue_mod.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise InfrastructureError(
                    f"decoder process {dead[0].name} died (exit code {dead[0].exitcode})"
                ) from None
            continue
        if kind == "error":
            raise payload
        if kind == "done":
            running -= 1
        else:
            yield payload
