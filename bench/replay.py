"""`ledger replay` as its own process: events per second and peak resident memory.

Each replay is a separate child. The replay may start decoder processes of its own,
so memory is sampled (psutil, every 50 ms) over the child's whole process tree: the
headline is the peak of the summed RSS (conservative: shared library pages count once
per process); the summed PSS and os.wait4's ru_maxrss (largest single process) are
details. The samples also show whether memory grows with the number of events read
(it should stay flat once the batches are in flight).
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ledger.settings import Settings

REPO = Path(__file__).resolve().parent.parent
REPLAYED = re.compile(r"replayed (?P<events>\d+) events.*?\((?P<accounts>\d+) accounts, "
                      r"(?P<rate>[\d,]+) events/s\)")
SAMPLE_S = 0.05


@dataclass
class ReplayRun:
    store: str
    events: int
    accounts: int
    seconds: float  # the child process, start to exit (interpreter start-up included)
    reported_per_s: float  # what `ledger replay` itself printed (command start to swap)
    peak_rss_mb: float  # peak of the process tree's summed RSS
    peak_pss_mb: float  # peak of the process tree's summed PSS
    maxrss_mb: float  # ru_maxrss from wait4: the largest single process
    processes: int  # most processes seen in the tree at once
    rss_mid_mb: float  # highest sample in the second quarter of the run (start-up is over)
    rss_end_mb: float  # highest sample in the last quarter
    output: str = field(repr=False, default="")

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def growth_mb(self) -> float:
        """How much memory grew from mid-run to the end: ~0 when flat in the event count."""
        return self.rss_end_mb - self.rss_mid_mb


def ledger_cli(settings: Settings, kafka_config: Path | None = None) -> list[str]:
    """`ledger` with the bench's broker, prefix and extra client properties, as argv."""
    argv = [sys.executable, "-m", "cli.main", "--bootstrap", settings.bootstrap,
            "--topic-prefix", settings.topic_prefix]
    return [*argv, "--kafka-config", str(kafka_config)] if kafka_config else argv


def replay_argv(settings: Settings, store: str, out: Path | None,
                kafka_config: Path | None = None) -> list[str]:
    argv = [*ledger_cli(settings, kafka_config), "--store", store, "replay", "--no-progress"]
    return [*argv, "--out", str(out)] if out is not None else argv


Sample = tuple[float, float, float, int]  # (time, RSS MB, PSS MB, processes)


def _sample(pid: int, samples: list[Sample], done: threading.Event) -> None:
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not done.is_set():
        rss = pss = 0.0
        count = 0
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return  # the child is gone
        for proc in tree:
            try:
                mem = proc.memory_full_info()
            except psutil.Error:
                continue  # a worker that just ended
            rss += mem.rss / 2**20
            pss += getattr(mem, "pss", mem.rss) / 2**20
            count += 1
        if count:
            samples.append((time.monotonic(), rss, pss, count))
        done.wait(SAMPLE_S)


def run_replay(settings: Settings, store: str, out: Path | None = None,
               timeout_s: float = 3600, kafka_config: Path | None = None) -> ReplayRun:
    """One `ledger replay` child, timed and watched; raises if it fails."""
    if out is not None:
        for stale in (out, out.with_name(out.name + ".wal")):
            stale.unlink(missing_ok=True)
    argv = replay_argv(settings, store, out, kafka_config)
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    samples: list[Sample] = []
    done = threading.Event()
    sampler = threading.Thread(target=_sample, args=(proc.pid, samples, done), daemon=True)
    sampler.start()
    assert proc.stdout is not None
    reader_out: list[bytes] = []
    reader = threading.Thread(target=lambda: reader_out.append(proc.stdout.read()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        status, rusage = _wait4(proc.pid, started + timeout_s)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    ended = time.monotonic()
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    reader.join(timeout=10)
    text = b"".join(reader_out).decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv[2:])}` exited {proc.returncode}: {text[-1500:]}")
    m = REPLAYED.search(text)
    if m is None:
        raise RuntimeError(f"cannot read the replay's summary line from: {text[-800:]!r}")
    quarter = (ended - started) / 4
    mid = [mb for t, mb, _, _ in samples if started + quarter < t <= started + 2 * quarter]
    end = [mb for t, mb, _, _ in samples if t > ended - quarter]
    every = [mb for _, mb, _, _ in samples] or [rusage.ru_maxrss / 1024]
    return ReplayRun(
        store=str(out) if out is not None else store.split("@")[-1],
        events=int(m["events"]), accounts=int(m["accounts"]), seconds=ended - started,
        reported_per_s=float(m["rate"].replace(",", "")),
        peak_rss_mb=max(every), peak_pss_mb=max((s[2] for s in samples), default=0.0),
        maxrss_mb=rusage.ru_maxrss / 1024, processes=max((s[3] for s in samples), default=1),
        rss_mid_mb=max(mid or every), rss_end_mb=max(end or every), output=text)


def _wait4(pid: int, deadline: float) -> tuple[int, resource.struct_rusage]:
    """Reap exactly this child, with its own rusage; polls so that a timeout can fire."""
    while True:
        got, status, rusage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return status, rusage
        if time.monotonic() > deadline:
            raise TimeoutError(f"replay (pid {pid}) still running at its deadline")
        time.sleep(0.02)
