"""`ledger replay` as its own process: events per second and peak resident memory.

Each replay is a separate child. The replay may start decoder processes of its own,
so memory is sampled (psutil, every 50 ms) over the child's whole process tree. The
headline is the larger of the summed RSS's peak (conservative: shared library pages
count once per process) and the largest process's own high-water mark (VmHWM, which the
kernel keeps exactly, so no spike between samples is missed). os.wait4's ru_maxrss is
not used: Linux counts the parent's resident memory at the child's exec into it (a
10 MB child of a 300 MB parent reports 311 MB). The summed PSS is a detail. The samples
also show whether memory grows with the number of events read (it should stay flat
once the batches are in flight).
"""

from __future__ import annotations

import os
import re
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
    peak_rss_mb: float  # the summed RSS's peak, or the largest VmHWM if that is higher
    peak_pss_mb: float  # peak of the process tree's summed PSS
    hwm_mb: float  # the largest single process's own peak RSS (VmHWM)
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


def _hwm_mb(pid: int) -> float:
    """The process's peak resident memory as the kernel recorded it (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _sample(pid: int, samples: list[Sample], hwm: dict[int, float],
            done: threading.Event) -> None:
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
            hwm[proc.pid] = max(hwm.get(proc.pid, 0.0), _hwm_mb(proc.pid))
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
    hwm: dict[int, float] = {}
    done = threading.Event()
    sampler = threading.Thread(target=_sample, args=(proc.pid, samples, hwm, done),
                               daemon=True)
    sampler.start()
    assert proc.stdout is not None
    reader_out: list[bytes] = []
    reader = threading.Thread(target=lambda: reader_out.append(proc.stdout.read()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        status = _reap(proc.pid, started + timeout_s)
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
    largest = max(hwm.values(), default=0.0)
    every = [mb for _, mb, _, _ in samples] or [largest]
    return ReplayRun(
        store=str(out) if out is not None else store.split("@")[-1],
        events=int(m["events"]), accounts=int(m["accounts"]), seconds=ended - started,
        reported_per_s=float(m["rate"].replace(",", "")),
        peak_rss_mb=max(*every, largest), peak_pss_mb=max((s[2] for s in samples), default=0.0),
        hwm_mb=largest, processes=max((s[3] for s in samples), default=1),
        rss_mid_mb=max(mid or every), rss_end_mb=max(end or every), output=text)


def _reap(pid: int, deadline: float) -> int:
    """Reap exactly this child; polls so that a timeout can fire."""
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"replay (pid {pid}) still running at its deadline")
        time.sleep(0.02)
