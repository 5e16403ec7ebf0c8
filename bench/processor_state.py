"""The processor's memory over millions of commands, and how fast it decides after a restart.

`python -m bench.processor_state --bootstrap HOST:PORT --commands 10000000`: pre-fills the
command topic with distinct earn/spend commands (every one an outcome the deduplication
window must remember), runs ONE `ledger serve` through them at full rate, and samples
its resident memory (VmRSS from /proc) as the committed offsets pass each mark. Then it
stops the processor, starts it again on the same state directory, and times from the
start of the process to the outcome of a new command: the first decision.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import TopicPartition

from bench.machine import cpu_model, load, ram_gb
from bench.processor import open_accounts, prefill_commands, start_serve, stop_serve
from ledger.client import LedgerClient, new_command_id
from ledger.domain import Actor, Earn
from ledger.kafka import committed, make_consumer
from ledger.settings import ENV_STATE_DIR, Settings
from ledger.topics import create_topics
from ledger.wire import Codec


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(bootstrap: str, commands: int, accounts: int, marks: list[int], workdir: Path,
        partitions: int) -> dict[str, object]:
    settings = Settings(bootstrap=bootstrap, topic_prefix=f"bst{uuid.uuid4().hex[:8]}",
                        partitions=partitions, home=workdir, state_dir=workdir / "state")
    codec = Codec()
    os.environ[ENV_STATE_DIR] = str(settings.state_path)  # for the `ledger serve` spawned
    create_topics(settings)
    open_accounts(settings, accounts, codec)
    prefill_started = time.monotonic()
    ends = prefill_commands(settings, commands, accounts, codec)
    prefill_s = time.monotonic() - prefill_started
    log = workdir / "serve.log"
    serve = start_serve(settings, log, 2000)
    samples: list[dict[str, float]] = []
    topic = settings.topic("commands")
    watcher = make_consumer(settings, f"{settings.topic_prefix}.processor")
    tps = [TopicPartition(topic, p) for p in sorted(ends)]
    total, pending_marks, started = sum(ends.values()), sorted(marks), time.monotonic()
    try:
        while True:
            done = sum(max(tp.offset, 0) for tp in committed(watcher, tps))
            while pending_marks and done >= pending_marks[0]:
                samples.append({"commands": pending_marks.pop(0), "rss_mb": rss_mb(serve.pid),
                                "seconds": time.monotonic() - started})
            if done >= total:
                break
            if serve.poll() is not None:
                raise RuntimeError(f"serve exited {serve.returncode}; see {log}")
            time.sleep(0.5)
        peak = rss_mb(serve.pid, "VmHWM")
        elapsed = time.monotonic() - started
    finally:
        watcher.close()
        stop_serve(serve)
    state_mb = sum(f.stat().st_size for f in (workdir / "state").rglob("*")) / 1e6
    restart = first_decision(settings, workdir / "restart.log")
    return {"commands": total, "rate_per_s": total / elapsed, "prefill_seconds": prefill_s,
            "samples": samples, "peak_rss_mb": peak, "state_dir_mb": state_mb,
            "first_decision_after_restart_s": restart,
            "machine": {"cpu": cpu_model(), "ram_gb": ram_gb(), "load_after": load()}}


def first_decision(settings: Settings, log: Path) -> float:
    """Seconds from spawning `ledger serve` again to the outcome of a new command."""
    spawned = time.monotonic()
    serve = start_serve(settings, log, 2000)
    client = LedgerClient(settings)
    try:
        outcome = client.send(Earn(command_id=new_command_id(), actor=Actor.SYSTEM,
                                   reason="after restart", account="user:p0", amount=1),
                              timeout=300)
        assert outcome.accepted, outcome
        return time.monotonic() - spawned
    finally:
        client.close()
        stop_serve(serve)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers.")
    parser.add_argument("--commands", type=int, default=1_000_000, help="Commands to run.")
    parser.add_argument("--accounts", type=int, default=10_000, help="Accounts they touch.")
    parser.add_argument("--partitions", type=int, default=3, help="Partitions per topic.")
    parser.add_argument("--out", type=Path, default=None, help="Write the JSON report here.")
    args = parser.parse_args(argv)
    step = max(1, args.commands // 10)
    marks = list(range(step, args.commands + 1, step))
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        report = run(args.bootstrap, args.commands, args.accounts, marks, Path(tmp),
                     args.partitions)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
