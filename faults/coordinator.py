"""Coordinator kill: SIGKILL the broker hosting the processor's transaction coordinator.

A private three-broker cluster (replication 3, min.insync.replicas 2) runs in the work
directory. While commands flow, the broker that leads the `__transaction_state` partition
of one of the processor's transactional ids (`<prefix>.processor.<instance>` and `...b`, in
turn) is killed with SIGKILL, so the coordinator dies while batches are being committed:
an EndTxn in flight, markers half written, a commit whose outcome the processor cannot
know. The broker is restarted and the cluster allowed to heal (every partition's ISR whole
again) before the next kill. After at least 20 kills, nothing accepted may be lost and
nothing decided twice.

The coordinator of a transactional id is the leader of partition
`abs(javaHashCode(id)) % partitions` of `__transaction_state` (Kafka's
TransactionStateManager.partitionFor); the first round checks that against Kafka's own
TransactionsCommand, and if neither answers the brokers are killed in rotation.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

import devstack
from devstack import kafka as dkafka
from faults.commands import random_commands
from faults.harness import (
    Driver,
    ScenarioReport,
    check,
    client_logs,
    keep_history,
    settle,
    stop_run,
    unique_prefix,
)
from faults.history import History
from faults.supervisor import (
    FAULTS_CREDIT_KEY,
    Supervisor,
    Timeline,
    covers,
)
from faults.workload import opens
from ledger.errors import InfrastructureError
from ledger.kafka import make_admin
from ledger.settings import Settings, default_home
from ledger.topics import create_topics

TXN_TOPIC = "__transaction_state"


@dataclass(frozen=True)
class CoordinatorConfig:
    workdir: Path
    seed: int = 1
    kills: int = 20
    # First free base from here (devstack.free_base; below the ephemeral range, and apart
    # from the test stacks' ports: tests/integration/stacks.py, FAULTS_KAFKA).
    base_port: int = 14092
    jars_dir: Path | None = None  # default: the dev stack's Kafka jars
    partitions: int = 6
    instances: int = 1
    users: int = 300
    rooms: int = 30
    commands: int = 10_000_000  # at most: the stream stops after the last kill
    rate: float = 300.0  # commands per second: commits all the time, CPU left for restarts
    window: int = 20_000
    down_s: tuple[float, float] = (2.0, 6.0)  # how long a killed coordinator stays down
    between_s: tuple[float, float] = (3.0, 8.0)  # load on a whole cluster between kills
    heal_timeout_s: float = 180.0
    max_batch: int = 500
    credit_key: str = FAULTS_CREDIT_KEY
    start_timeout_s: float = 180.0
    idle_timeout_s: float = 600.0
    outcome_timeout_s: float = 120.0
    keep_cluster: bool = False
    quiet: bool = False


def java_hash(text: str) -> int:
    """Java's String.hashCode (over UTF-16 code units), as a signed 32-bit int."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i:i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def txn_state_partition(transactional_id: str, partitions: int = 50) -> int:
    """Kafka's partitionFor: Utils.abs(hashCode) % the topic's partition count."""
    h = java_hash(transactional_id)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def coordinator_of(admin: AdminClient, transactional_id: str) -> int | None:
    """The broker leading the transaction-state partition of `transactional_id`."""
    topic = admin.list_topics(TXN_TOPIC, timeout=10).topics.get(TXN_TOPIC)
    if topic is None or topic.error is not None or not topic.partitions:
        return None
    part = topic.partitions.get(txn_state_partition(transactional_id, len(topic.partitions)))
    return part.leader if part is not None and part.leader >= 0 else None


def described_coordinator(jars: Path, bootstrap: str, transactional_id: str) -> int | None:
    """The coordinator as Kafka's TransactionsCommand describes it (a JVM: slow, for checks)."""
    java = shutil.which("java")
    if java is None:
        return None
    try:
        done = subprocess.run(
            [java, "-cp", f"{jars}/*", "org.apache.kafka.tools.TransactionsCommand",
             "--bootstrap-server", bootstrap, "describe", "--transactional-id", transactional_id],
            capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        return None
    lines = [ln.split() for ln in done.stdout.splitlines() if ln.strip()]
    if len(lines) < 2 or "CoordinatorId" not in lines[0]:
        return None
    value = lines[1][lines[0].index("CoordinatorId")]
    return int(value) if re.fullmatch(r"\d+", value) else None


def under_replicated(admin: AdminClient) -> int:
    """Partitions (internal topics included) whose ISR lacks a replica or that lack a leader."""
    md = admin.list_topics(timeout=10)
    return sum(1 for t in md.topics.values() for p in t.partitions.values()
               if p.leader < 0 or len(p.isrs) < len(p.replicas))


def run_coordinator(cfg: CoordinatorConfig) -> ScenarioReport:
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    with client_logs(cfg.workdir):
        return _run_coordinator(cfg)


def _run_coordinator(cfg: CoordinatorConfig) -> ScenarioReport:
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    note = Timeline(cfg.quiet)
    rng = random.Random(cfg.seed)
    home = cfg.workdir / "cluster"
    jars = cfg.jars_dir or dkafka.default_jars_dir(default_home())
    prefix = unique_prefix("coord", cfg.seed)
    report = ScenarioReport("coordinator", cfg.seed, prefix)
    base = devstack.free_base(cfg.base_port, 3)
    note(f"coordinator seed {cfg.seed}: starting 3 brokers from port {base} in {home}")
    info = devstack.up(home, brokers=3, base_port=base, jars_dir=jars)
    assert info.bootstrap is not None
    try:
        _run(cfg, note, rng, home, jars, info.bootstrap, prefix, report)
    finally:
        if not cfg.keep_cluster:
            devstack.down(home, wipe=True)
            note("cluster stopped and wiped")
    report.seconds = note.elapsed
    note(report.summary())
    report.timeline = note.lines
    return report


def _run(cfg: CoordinatorConfig, note: Timeline, rng: random.Random, home: Path, jars: Path,
         bootstrap: str, prefix: str, report: ScenarioReport) -> None:
    settings = Settings(bootstrap=bootstrap, topic_prefix=prefix, partitions=cfg.partitions,
                        home=cfg.workdir, state_dir=cfg.workdir / "state")
    create_topics(settings)
    admin = make_admin(settings)
    sup = Supervisor(settings, cfg.workdir, note, cfg.credit_key, cfg.max_batch)
    history = History()
    driver: Driver | None = None
    rounds: list[dict[str, object]] = []
    try:
        names = [f"coord-{n}" for n in range(cfg.instances)]
        for name in names:
            sup.start(name)
        if not sup.wait_owned(covers(cfg.partitions), cfg.start_timeout_s):
            raise TimeoutError("the processor did not take its partitions")
        txn_ids = [f"{prefix}.processor.{n}{suffix}" for n in names for suffix in ("", ".b")]
        driver = Driver(settings, history, cfg.window, cfg.rate)
        driver.send_all(opens(cfg.users, cfg.rooms, f"k{cfg.seed}"))
        driver.stream(random_commands(cfg.seed * 7919, cfg.commands, cfg.users, cfg.rooms,
                                      f"k{cfg.seed}"))
        sup.sleep(5.0)
        checked = _check_coordinator_lookup(admin, jars, bootstrap, txn_ids[0], note)
        report.notes["coordinator lookup checked against TransactionsCommand"] = checked
        for n in range(cfg.kills):
            txn_id = txn_ids[n % len(txn_ids)]
            rounds.append(_kill_round(cfg, note, rng, home, admin, sup, txn_id, n,
                                      use_lookup=checked is not False))
        driver.stop.set()
        driver.join(120)
        note(f"stream stopped after {driver.sent} commands; {history.in_flight} in flight")
        settle(settings, report, sup, driver, history, note, cfg.idle_timeout_s,
               cfg.outcome_timeout_s)
    finally:
        stop_run(sup, driver, note)
    keep_history(report, history, sup, cfg.workdir)
    report.notes["kills"] = rounds
    report.notes["processor log"] = {
        i.instance_id: {k: i.text().count(k) for k in
                        ("fencing the producer", "re-synchronising", "aborting and retrying",
                         "failed retriably", "rejoining")}
        for i in sup.instances.values()}
    report.history = check(settings, history)


def _check_coordinator_lookup(admin: AdminClient, jars: Path, bootstrap: str, txn_id: str,
                              note: Timeline) -> bool | None:
    ours = coordinator_of(admin, txn_id)
    kafka = described_coordinator(jars, bootstrap, txn_id)
    note(f"coordinator of {txn_id}: broker {ours} by partition lookup, {kafka} by "
         "TransactionsCommand")
    if kafka is None:
        return None if ours is not None else False
    return ours == kafka


def _kill_round(cfg: CoordinatorConfig, note: Timeline, rng: random.Random, home: Path,
                admin: AdminClient, sup: Supervisor, txn_id: str, n: int,
                use_lookup: bool) -> dict[str, object]:
    victim = None
    if use_lookup:
        try:
            victim = coordinator_of(admin, txn_id)
        except Exception as e:  # metadata unavailable: fall back to rotation
            note(f"coordinator lookup failed: {e}")
    how = "coordinator" if victim is not None else "rotation"
    if victim is None:
        victim = n % 3 + 1
    down = rng.uniform(*cfg.down_s)
    devstack.kill_broker(home, victim)
    killed = time.monotonic()
    note(f"kill {n + 1}/{cfg.kills}: SIGKILL broker {victim} ({how} of {txn_id})")
    sup.sleep(down)
    try:
        moved_to = coordinator_of(admin, txn_id)
    except Exception:
        moved_to = None
    _restart(home, admin, sup, victim, note)
    restarted = time.monotonic()
    healed = None
    deadline = restarted + cfg.heal_timeout_s
    while time.monotonic() < deadline:
        try:
            if under_replicated(admin) == 0:
                healed = time.monotonic() - restarted
                break
        except Exception:
            pass
        sup.sleep(0.5)
    note(f"  broker {victim} back after {restarted - killed:.1f}s; coordinator meanwhile "
         f"{moved_to}; ISRs whole {f'after {healed:.1f}s' if healed is not None else 'NOT'}")
    sup.sleep(rng.uniform(*cfg.between_s))
    return {"broker": victim, "how": how, "txn_id": txn_id,
            "down_s": round(restarted - killed, 1), "coordinator_while_down": moved_to,
            "healed_s": None if healed is None else round(healed, 1)}


def _restart(home: Path, admin: AdminClient, sup: Supervisor, node: int, note: Timeline,
             timeout: float = 600.0) -> None:
    """Start a killed broker; on a loaded machine its start can outlast the dev stack's
    60 s wait, so keep waiting (and start it again if it died) until the cluster lists it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            devstack.start_broker(home, node)
            return
        except InfrastructureError as e:
            note(f"  broker {node} slow to start: {str(e).splitlines()[0][:160]}")
        while time.monotonic() < deadline:
            try:
                if node in admin.list_topics(timeout=10).brokers:
                    return
            except Exception:
                pass
            if dkafka.live_broker(home, 3, node) is None:
                break  # it died: start it again
            sup.sleep(2.0)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"broker {node} did not come back in {timeout:.0f}s")
