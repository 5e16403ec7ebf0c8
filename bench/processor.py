"""The write path: exactly-once commands per second, and submit-to-outcome latency.

Throughput: accounts are pre-opened on the wire (account states, their grant events
and balance snapshots, as the processor itself would have written them), the
command topic is pre-filled with earn/spend commands, then ONE `ledger serve`
process starts; the clock runs until its consumer group's committed offsets (sent
inside its transactions) reach the end of the command topic.

Latency: with that processor still running, a client submits earn commands at a
steady offered rate with wait=True and records, per command, the time from the
submit call to the outcome's arrival from the results topic.

One round does both (`write_path_round`). The bench runs a warm-up round on its own
topics first: a freshly started broker's JIT has not yet compiled its transaction
paths, which at 2,000 commands/s are called only ~100 times a second.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import TopicPartition

from bench.journal import START_MS, account_record, produce_retrying, transactional_producer
from bench.replay import ledger_cli
from ledger.client import LedgerClient
from ledger.credits import generate_key
from ledger.domain import Actor, Earn, Spend, entry_event_id
from ledger.kafka import committed, make_consumer, make_producer
from ledger.records import Outcome, command_to_record
from ledger.settings import ENV_CREDIT_KEY, Settings
from ledger.topics import create_topics
from ledger.wire import Codec

REPO = Path(__file__).resolve().parent.parent
GRANT = 1_000_000_000 // 1000  # far more than the commands can spend: nothing is refused
POLL_S = 0.05


@dataclass
class ProcessorRun:
    commands: int
    seconds: float  # first committed batch to the last: the steady rate
    wall_seconds: float  # process start to the last commit (start-up, restore, group join)
    startup_seconds: float

    @property
    def per_s(self) -> float:
        return self.commands / self.seconds if self.seconds > 0 else 0.0


@dataclass
class LatencyRun:
    offered_per_s: float
    achieved_per_s: float
    sent: int
    received: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class WritePathRound:
    throughput: ProcessorRun
    latency: LatencyRun


def write_path_round(settings: Settings, codec: Codec, commands: int, accounts: int,
                     seed: int, max_batch: int, rate: float, seconds: float, log: Path,
                     kafka_config: Path | None = None,
                     before_latency: Callable[[ProcessorRun], None] | None = None,
                     ) -> WritePathRound:
    """Open accounts, pre-fill commands, run one `ledger serve`: its rate, then latency."""
    create_topics(settings)
    open_accounts(settings, accounts, codec)
    ends = prefill_commands(settings, commands, accounts, codec, seed)
    log.unlink(missing_ok=True)
    spawned = time.monotonic()
    serve = start_serve(settings, log, max_batch, kafka_config)
    try:
        run = wait_committed(settings, ends, serve, spawned)
        if before_latency is not None:  # the processor idles meanwhile
            before_latency(run)
        return WritePathRound(run, measure_latency(settings, accounts, rate, seconds,
                                                   codec=codec))
    finally:
        stop_serve(serve)


def account_name(i: int) -> str:
    return f"user:p{i}"


def open_accounts(settings: Settings, accounts: int, codec: Codec) -> None:
    """Account states, grant events and balance snapshots, in one transaction."""
    producer = transactional_producer(settings, "bench-accounts")
    producer.begin_transaction()
    for i in range(accounts):
        name = account_name(i)
        key = name.encode()
        event_id = entry_event_id(f"bench-open-{i}", name)
        produce_retrying(producer, settings.topic("accounts"), key,
                 codec.encode("account", account_record(name, START_MS)))
        produce_retrying(producer, settings.topic("events"), key, codec.encode("event", {
            "event_id": event_id, "command_id": f"bench-open-{i}", "kind": "GRANTED",
            "postings": [{"account": "system:rewards", "amount": -GRANT},
                         {"account": name, "amount": GRANT}],
            "occurred_at": START_MS, "actor": "SYSTEM", "reason": "bench grant",
            "reverses_event_id": None}))
        produce_retrying(producer, settings.topic("balances"), key, codec.encode("balance", {
            "account": name, "balance": GRANT, "floor": 0, "is_open": True, "type": "USER",
            "updated_at": START_MS, "last_event_id": event_id}))
    producer.commit_transaction(120)


def prefill_commands(settings: Settings, commands: int, accounts: int, codec: Codec,
                     seed: int = 7) -> dict[int, int]:
    """Earn and spend commands (half each) on the command topic; returns its end offsets."""
    rng = random.Random(seed)
    producer = make_producer(settings)
    topic = settings.topic("commands")
    now = int(time.time() * 1000)
    for i in range(commands):
        account = account_name(rng.randrange(accounts))
        amount = rng.randint(1, 100)
        cmd: Earn | Spend
        if i % 2:
            cmd = Spend(command_id=f"bench-cmd-{i}", actor=Actor.USER, reason="reward shop",
                        account=account, amount=amount)
        else:
            cmd = Earn(command_id=f"bench-cmd-{i}", actor=Actor.SYSTEM,
                       reason="study session verified", account=account, amount=amount)
        produce_retrying(producer, topic, account.encode(),
                 codec.encode("command", command_to_record(cmd, now)))
    if producer.flush(120):
        raise RuntimeError("pre-filled commands not acknowledged in 120 s")
    consumer = make_consumer(settings, None)
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                                  cached=False)[1] for p in parts}
    finally:
        consumer.close()


def start_serve(settings: Settings, log: Path, max_batch: int,
                kafka_config: Path | None = None) -> subprocess.Popen[bytes]:
    argv = [*ledger_cli(settings, kafka_config), "-v", "serve", "--instance-id", "bench-0",
            "--max-batch", str(max_batch)]
    with log.open("ab") as out:
        return subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=out,
                                env={**os.environ, "PYTHONUNBUFFERED": "1",
                                     # serve refuses to run without a key: the bench's own
                                     ENV_CREDIT_KEY: os.environ.get(ENV_CREDIT_KEY)
                                     or generate_key()})


def stop_serve(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (finish the open batch), then SIGKILL after 30 s; only this pid."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_committed(settings: Settings, ends: dict[int, int], proc: subprocess.Popen[bytes],
                   spawned: float, timeout_s: float = 1800) -> ProcessorRun:
    """Watch the processor group's committed offsets until they reach `ends`."""
    topic = settings.topic("commands")
    total = sum(ends.values())
    watcher = make_consumer(settings, f"{settings.topic_prefix}.processor")
    tps = [TopicPartition(topic, p) for p in sorted(ends)]
    first: tuple[float, int] | None = None
    try:
        while True:
            now = time.monotonic()
            done = sum(max(tp.offset, 0) for tp in committed(watcher, tps))
            if first is None and done > 0:
                first = (now, done)
            if done >= total:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"`ledger serve` exited {proc.returncode} after "
                                   f"{done} of {total} commands")
            if now - spawned > timeout_s:
                raise TimeoutError(f"processor committed {done} of {total} in {timeout_s:.0f}s")
            time.sleep(POLL_S)
    finally:
        watcher.close()
    assert first is not None
    steady = now - first[0]
    if steady <= 0:  # everything in the first observed batch: fall back to the wall clock
        return ProcessorRun(total, now - spawned, now - spawned, now - spawned)
    return ProcessorRun(total - first[1], steady, now - spawned, first[0] - spawned)


def measure_latency(settings: Settings, accounts: int, rate: float, seconds: float,
                    warmup_s: float = 2.0, codec: Codec | None = None) -> LatencyRun:
    """Submit earn commands at `rate`/s for `seconds` (after a warm-up); time each outcome."""
    client = LedgerClient(settings, codec)
    rng = random.Random(11)
    run_id = uuid.uuid4().hex[:8]
    try:
        _paced(client, rng, accounts, rate, warmup_s, f"warm-{run_id}", {}, {})
        sent_at: dict[int, float] = {}
        done_at: dict[int, float] = {}
        started = time.perf_counter()
        futures = _paced(client, rng, accounts, rate, seconds, f"lat-{run_id}", sent_at, done_at)
        sending = time.perf_counter() - started
        client.flush(60)
        deadline = time.monotonic() + 60
        for fut in futures:
            try:
                fut.result(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
    finally:
        client.close()
    waits = sorted((done_at[i] - sent_at[i]) * 1000 for i in done_at if i in sent_at)
    if not waits:
        raise RuntimeError("no outcome arrived during the latency phase")
    return LatencyRun(rate, len(sent_at) / sending, len(sent_at), len(waits),
                      _pct(waits, 50), _pct(waits, 90), _pct(waits, 99), waits[-1])


def _paced(client: LedgerClient, rng: random.Random, accounts: int, rate: float,
           seconds: float, tag: str, sent_at: dict[int, float],
           done_at: dict[int, float]) -> list[Future[Outcome]]:
    count = max(1, int(rate * seconds))
    futures: list[Future[Outcome]] = []
    clock = time.perf_counter
    t0 = clock()
    for i in range(count):
        delay = t0 + i / rate - clock()
        if delay > 0:
            time.sleep(delay)
        cmd = Earn(command_id=f"{tag}-{i}", actor=Actor.SYSTEM, reason="study session verified",
                   account=account_name(rng.randrange(accounts)), amount=rng.randint(1, 100))
        sent_at[i] = clock()
        fut = client.submit(cmd, wait=True)
        assert fut is not None
        fut.add_done_callback(_stamp(done_at, i))
        futures.append(fut)
        client._producer.poll(0)  # serve delivery reports; the client has no public hook
    return futures


def _stamp(done_at: dict[int, float], i: int) -> Callable[[Future[Outcome]], None]:
    """A done-callback noting when outcome i arrived (it runs on the client's watcher)."""
    def stamp(_future: Future[Outcome]) -> None:
        done_at[i] = time.perf_counter()

    return stamp


def _pct(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = math.ceil(pct / 100 * len(sorted_values))  # 1-based
    return sorted_values[max(0, min(len(sorted_values), rank) - 1)]
