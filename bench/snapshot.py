"""Snapshots and exports for analysts: how long, how much memory, what they cost a projector.

`python -m bench.snapshot --bootstrap HOST:PORT --postgres-url URL --events 1000000`:
1. generates a journal (bench.journal) and projects it with `ledger project
   --until-caught-up` into a fresh DuckDB store, without and with `--snapshot-every` for
   each of --intervals (events/s of the whole process; how many snapshots it took);
2. runs `ledger project` on the caught-up store and, while it runs, `ledger snapshot`
   (the projector takes it): a full one (a copy of the store's file, for which the
   projector pauses), then, after 1% more events, incremental ones until the snapshot
   holds them all; the time of each (the command's wall time and the snapshot's own) and
   the projector's resident memory meanwhile (sampled, and VmHWM);
3. the same, full and incremental, of a Postgres store under a running projector (the
   snapshot is then its own process: its peak resident memory);
4. `ledger export --format parquet` of the snapshot: rows per second, peak memory.
Writes a JSON report (--out) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import journal
from bench.machine import cpu_model, load, ram_gb
from bench.replay import REPO, ledger_cli
from bench.stack import delete_topics, drop_schema, fresh_schema_url, target
from ledger.settings import Settings
from ledger.topics import TOPICS, create_topics

SAMPLE_S = 0.05
TAKEN = re.compile(r"snapshot \S+: (?:full|incremental),")  # the projector's log line


@dataclass
class Peak:
    """Resident memory of one process while watched: before, highest sample, VmHWM."""

    pid: int
    before_mb: float = 0.0
    peak_mb: float = 0.0
    hwm_mb: float = 0.0
    samples: list[float] = field(default_factory=list)


def _rss_mb(pid: int, name: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@contextmanager
def watched(pid: int) -> Iterator[Peak]:
    """Sample pid's resident memory (its whole tree) until the block ends."""
    peak = Peak(pid, before_mb=_rss_mb(pid))
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                root = psutil.Process(pid)
                tree = [root, *root.children(recursive=True)]
                peak.samples.append(sum(p.memory_info().rss for p in tree) / 2**20)
                peak.hwm_mb = max(peak.hwm_mb, _rss_mb(pid, "VmHWM"))
            except psutil.Error:
                return
            done.wait(SAMPLE_S)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()
        peak.peak_mb = max(peak.samples, default=peak.before_mb)


def ledger(settings: Settings, store: str, *args: str) -> list[str]:
    return [*ledger_cli(settings), "--store", store, *args]


def run_child(argv: list[str], log: Path) -> tuple[float, Peak, str]:
    """Run a command to its end: (seconds, its memory, its stdout)."""
    started = time.monotonic()
    with log.open("ab") as err:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=err)
        with watched(proc.pid) as peak:
            out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv[2:])}` exited {proc.returncode}; see {log}")
    return time.monotonic() - started, peak, out.decode()


@contextmanager
def live_projector(settings: Settings, store: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(ledger(settings, store, "-v", "project"), cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        while "projector assigned" not in log.read_text():
            if proc.poll() is not None:
                raise RuntimeError(f"projector exited {proc.returncode}; see {log}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)


def snapshot(settings: Settings, store: str, out: Path, log: Path,
             projector: int | None) -> dict[str, Any]:
    """`ledger snapshot`, timed; memory of the projector taking it (or of the command)."""
    argv = ledger(settings, store, "snapshot", "--out", str(out), "--json")
    if projector is None:
        seconds, peak, text = run_child(argv, log)
    else:
        with watched(projector) as peak:
            seconds, _, text = run_child(argv, log)
    result = json.loads(text)
    return {"wall_seconds": round(seconds, 2), "snapshot_seconds": result["seconds"],
            "mode": result["mode"], "audit_rows": result["audit_rows"],
            "rows_added": result["rows_added"], "bytes": result["bytes"],
            "memory_before_mb": round(peak.before_mb, 1) if projector is not None else None,
            "memory_peak_mb": round(peak.peak_mb, 1), "vmhwm_mb": round(peak.hwm_mb, 1)}


def project_rates(settings: Settings, work: Path, events: int,
                  intervals: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label in ["none", *intervals]:
        store = f"duckdb:///{work / f'project-{label}.duckdb'}"
        every = [] if label == "none" else [
            "--snapshot-every", label, "--snapshot-out", str(work / f"every-{label}.duckdb")]
        log = work / f"project-{label}.log"
        seconds, peak, _ = run_child(
            ledger(settings, store, "-v", "project", "--until-caught-up", *every), log)
        out[label] = {"seconds": round(seconds, 2), "events_per_s": round(events / seconds),
                      "snapshots": len(TAKEN.findall(log.read_text())),
                      "peak_mb": round(peak.peak_mb, 1)}
        print(f"project, snapshots every {label}: {out[label]}", file=sys.stderr)
    return out


def run(bootstrap: str, postgres_url: str | None, events: int, intervals: list[str],
        work: Path) -> dict[str, Any]:
    settings = Settings(bootstrap=bootstrap, topic_prefix=f"bsnap-{uuid.uuid4().hex[:8]}",
                        partitions=6)
    create_topics(settings)
    report: dict[str, Any] = {
        "events": events, "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                                      "ram_gb": ram_gb(), "load_at_start": load()}}
    try:
        shape = journal.Shape.for_events(events)
        journal.write_journal(settings, shape)
        report["project"] = project_rates(settings, work, events, intervals)
        store = f"duckdb:///{work / 'project-none.duckdb'}"
        snap = work / "snapshot.duckdb"
        with live_projector(settings, store, work / "live.log") as proc:
            report["duckdb_full"] = snapshot(settings, store, snap, work / "snap.log", proc.pid)
            paused = re.findall(r"store file copied in ([\d.]+)s", (work / "live.log").read_text())
            report["duckdb_full"]["projector_paused_s"] = float(paused[-1]) if paused else None
            extra = journal.Shape(max(1, events // 100), shape.users, shape.rooms, seed=7)
            journal.write_journal(settings, extra)
            want = 2 * (events + extra.events)
            tries: list[dict[str, Any]] = []
            while not tries or tries[-1]["audit_rows"] < want:
                tries.append(snapshot(settings, store, snap, work / "snap.log", proc.pid))
            report["duckdb_incremental"] = tries
        report["export"] = export(settings, snap, work)
        if postgres_url is not None:
            report["postgres"] = postgres(settings, postgres_url, work, shape)
    finally:
        delete_topics(settings, [t.name for t in TOPICS])
    report["machine"]["load_at_end"] = load()
    return report


def export(settings: Settings, snap: Path, work: Path) -> dict[str, Any]:
    out = work / "export"
    seconds, peak, text = run_child(
        ledger(settings, f"duckdb:///{snap}", "export", "--out", str(out), "--json"),
        work / "export.log")
    result = json.loads(text)
    rows = sum(result["rows"].values())
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"wall_seconds": round(seconds, 2), "export_seconds": result["seconds"],
            "rows": rows, "rows_per_s": round(rows / result["seconds"]),
            "wall_rows_per_s": round(rows / seconds), "bytes": size,
            "peak_mb": round(peak.peak_mb, 1)}


def postgres(settings: Settings, postgres_url: str, work: Path,
             shape: journal.Shape) -> dict[str, Any]:
    """A full snapshot of a Postgres store under a running projector, then incremental
    ones after 1% more events until they hold every row."""
    url = fresh_schema_url(postgres_url, "bsnap")
    out, log = work / "pg.duckdb", work / "pg-snap.log"
    try:
        seconds, _, _ = run_child(ledger(settings, url, "project", "--until-caught-up"),
                                  work / "pg-project.log")
        with live_projector(settings, url, work / "pg-live.log"):
            result = snapshot(settings, url, out, log, None)
            extra = journal.Shape(max(1, shape.events // 100), shape.users, shape.rooms, seed=8)
            journal.write_journal(settings, extra)
            want = result["audit_rows"] + 2 * extra.events
            tries: list[dict[str, Any]] = []
            while not tries or tries[-1]["audit_rows"] < want:
                tries.append(snapshot(settings, url, out, log, None))
        result["project_seconds"] = round(seconds, 2)
        return {"full": result, "incremental": tries}
    finally:
        drop_schema(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka bootstrap servers (default: a dev stack of its own).")
    parser.add_argument("--postgres-url", default=None,
                        help="Postgres URL for the Postgres snapshot (default: the dev "
                             "stack's; with --no-postgres none).")
    parser.add_argument("--no-postgres", action="store_true", help="Skip the Postgres part.")
    parser.add_argument("--events", type=int, default=1_000_000, help="Journal events.")
    parser.add_argument("--intervals", default="60s",
                        help="Comma-separated --snapshot-every values to compare with none.")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="Where the stores and files go (default: a temporary directory, "
                             "removed after).")
    parser.add_argument("--out", type=Path, default=None, help="Write the JSON report here.")
    args = parser.parse_args(argv)
    intervals = [i.strip() for i in args.intervals.split(",") if i.strip()]
    with target(args.bootstrap, args.postgres_url, need_postgres=not args.no_postgres) as where:
        pg = None if args.no_postgres else where.postgres_url
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            report = run(where.bootstrap, pg, args.events, intervals, args.workdir)
        else:
            work = Path(tempfile.mkdtemp(prefix="bench-snapshot-"))
            try:
                report = run(where.bootstrap, pg, args.events, intervals, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
