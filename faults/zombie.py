"""Zombie: an instance frozen past its session timeout comes back and must be fenced.

Two `ledger serve` instances share the partitions. While commands flow, one is frozen with
SIGSTOP for longer than the processor consumer's session timeout (10 s) but shorter than
its transaction timeout (60 s): the group gives its partitions to the other, which decides
their commands from the committed offsets on. Then SIGCONT: the frozen instance wakes up
mid-batch with a transaction open and records fetched for partitions it no longer owns.
Whatever it writes now must never commit (its consumed offsets belong to a dead group
generation); the history must show nothing lost and nothing decided twice.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

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
from faults.history import FAILED, OK, History, Op
from faults.supervisor import (
    FAULTS_CREDIT_KEY,
    Instance,
    Supervisor,
    Timeline,
    covers,
)
from faults.workload import opens
from ledger.kafka import partition_for
from ledger.settings import Settings
from ledger.topics import create_topics

# What the woken instance's log says about its fate (fenced, aborted, revoked, resynced...).
WAKE_PATTERN = (r"fenc|abort|ILLEGAL_GENERATION|UNKNOWN_MEMBER|FENCED|revok|released|"
                r"re-synchronis|rejoin|transaction failed|failed fatally|owns partitions|"
                r"Traceback|error:")


@dataclass(frozen=True)
class ZombieConfig:
    bootstrap: str
    workdir: Path
    seed: int = 1
    partitions: int = 6
    users: int = 300
    rooms: int = 30
    commands: int = 2_000_000  # at most: the stream stops once the pauses are over
    # As fast as the window allows: the instances are saturated, so a SIGSTOP lands mid-batch.
    rate: float = 0.0
    window: int = 20_000  # commands in flight at most
    pauses: int = 8  # alternating between the two instances
    # Cycled per pause. busy: frozen at a random moment under a saturating stream. If its
    # transaction is already open on the broker, the other instance waits for it (its
    # restore waits for the changelogs' open transactions to end) and takes over only when
    # the frozen one wakes and aborts; if not, the other takes over during the freeze and
    # the frozen one wakes mid-batch believing it still owns its partitions. commit:
    # frozen the moment an outcome it decided becomes visible (its batch just committed:
    # it is taking the batch into its store, in its housekeeping, or starting the next
    # batch). idle: the stream is held until every command is decided, the victim is
    # frozen idle and the stream resumes: the other takes over during the freeze.
    modes: tuple[str, ...] = ("busy", "commit")
    # Seeded per pause: > session.timeout.ms 10 s (a takeover takes ~12-16 s here),
    # < transaction.timeout.ms 60 s.
    pause_s: tuple[float, float] = (16.0, 26.0)
    warmup_s: float = 5.0
    settle_s: float = 15.0  # after each SIGCONT, before the next pause
    tail_s: float = 5.0  # commands still flowing after the last pause
    max_batch: int = 500
    credit_key: str = FAULTS_CREDIT_KEY
    start_timeout_s: float = 120.0
    idle_timeout_s: float = 300.0
    outcome_timeout_s: float = 60.0
    prefix: str = ""
    quiet: bool = False
    instances: tuple[str, str] = field(default=("zombie-a", "zombie-b"))


def run_zombie(cfg: ZombieConfig) -> ScenarioReport:
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    with client_logs(cfg.workdir):
        return _run_zombie(cfg)


def _run_zombie(cfg: ZombieConfig) -> ScenarioReport:
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    note = Timeline(cfg.quiet)
    prefix = cfg.prefix or unique_prefix("zombie", cfg.seed)
    settings = Settings(bootstrap=cfg.bootstrap, topic_prefix=prefix, partitions=cfg.partitions,
                        home=cfg.workdir, state_dir=cfg.workdir / "state")
    create_topics(settings)
    report = ScenarioReport("zombie", cfg.seed, prefix)
    sup = Supervisor(settings, cfg.workdir, note, cfg.credit_key, cfg.max_batch)
    history = History()
    driver: Driver | None = None
    rng = random.Random(cfg.seed)
    note(f"zombie seed {cfg.seed}: prefix {prefix}, {cfg.partitions} partitions, "
         f"{cfg.pauses} pauses of {cfg.pause_s[0]:g}-{cfg.pause_s[1]:g}s")
    try:
        a, b = (sup.start(i) for i in cfg.instances)
        if not sup.wait_owned(covers(cfg.partitions, each_nonempty=True), cfg.start_timeout_s):
            raise TimeoutError("the two instances did not share the partitions: "
                               + a.text()[-1500:] + b.text()[-1500:])
        note(f"{a.instance_id} owns {sorted(a.owned() or ())}, "
             f"{b.instance_id} owns {sorted(b.owned() or ())}")
        driver = Driver(settings, history, cfg.window, cfg.rate)
        driver.send_all(opens(cfg.users, cfg.rooms, f"z{cfg.seed}"))
        _await(history, 120, sup)
        note(f"{cfg.users} users and {cfg.rooms} rooms opened: {dict(history.counts())}")
        driver.stream(random_commands(cfg.seed * 7919, cfg.commands, cfg.users, cfg.rooms,
                                      f"z{cfg.seed}"))
        sup.sleep(cfg.warmup_s)
        for n in range(cfg.pauses):
            victim, survivor = (a, b) if n % 2 == 0 else (b, a)
            length = rng.uniform(*cfg.pause_s)
            mode = cfg.modes[n % len(cfg.modes)]
            report.notes[f"pause {n + 1}"] = _pause(cfg, sup, driver, victim, survivor,
                                                    length, mode, history, note)
            sup.sleep(cfg.settle_s if n + 1 < cfg.pauses else cfg.tail_s)
        driver.stop.set()
        driver.join(120)
        note(f"stream stopped after {driver.sent} commands; {history.in_flight} in flight")
        settle(settings, report, sup, driver, history, note, cfg.idle_timeout_s,
               cfg.outcome_timeout_s)
    finally:
        stop_run(sup, driver, note)
    keep_history(report, history, sup, cfg.workdir)
    report.history = check(settings, history)
    report.seconds = note.elapsed
    note(report.summary())
    report.timeline = note.lines
    return report


def _pause(cfg: ZombieConfig, sup: Supervisor, driver: Driver, victim: Instance,
           survivor: Instance, length: float, mode: str, history: History,
           note: Timeline) -> dict[str, object]:
    if mode == "idle":
        driver.hold.set()
        _await(history, 300, sup)
        sup.sleep(1.0)  # past the victim's last commit: it waits in poll()
    mark = len(victim.text())
    owned = sorted(victim.owned() or ())
    if mode == "commit":
        _freeze_after_commit(cfg, victim, set(owned), history)
    else:
        victim.pause()
    frozen = time.monotonic()
    driver.hold.clear()
    note(f"SIGSTOP {victim.instance_id} ({mode}; owns {owned}); {history.in_flight} commands "
         "in flight")
    everything = set(range(cfg.partitions))
    took = sup.wait_owned(lambda o: o.get(survivor.instance_id) == everything, length)
    takeover = time.monotonic() - frozen
    if took:
        note(f"{survivor.instance_id} took every partition after {takeover:.1f}s")
    else:
        note(f"{survivor.instance_id} did not log owning every partition within the pause")
    left = length - (time.monotonic() - frozen)
    if left > 0:
        sup.sleep(left)
    victim.resume()
    note(f"SIGCONT {victim.instance_id} after {time.monotonic() - frozen:.1f}s")
    sup.sleep(3.0)
    woke = victim.lines_since(mark, WAKE_PATTERN)[:12]
    for line in woke[:6]:
        note(f"  {victim.instance_id}: {line[:200]}")
    return {"victim": victim.instance_id, "mode": mode, "owned": owned,
            "pause_s": round(length, 1),
            "takeover_s": round(takeover, 1) if took else None, "woken_log": woke}


def _freeze_after_commit(cfg: ZombieConfig, victim: Instance, partitions: set[int],
                         history: History, timeout: float = 30.0) -> None:
    """SIGSTOP the victim the moment an outcome it decided becomes visible: its batch has
    just committed, so it is taking the batch into its store, in its housekeeping, or
    deciding the next batch, whose records are not on the broker yet."""
    fired = threading.Event()
    routes: dict[str, int] = {}

    def on_complete(op: Op) -> None:
        if fired.is_set() or op.status not in (OK, FAILED):
            return
        partition = routes.get(op.account)
        if partition is None:
            partition = routes[op.account] = partition_for(op.account.encode(), cfg.partitions)
        if partition in partitions and not fired.is_set():
            fired.set()
            victim.pause()

    history.listeners.append(on_complete)
    try:
        if not fired.wait(timeout):
            victim.pause()
    finally:
        history.listeners.remove(on_complete)


def _await(history: History, timeout: float, sup: Supervisor) -> None:
    deadline = time.monotonic() + timeout
    while history.in_flight and time.monotonic() < deadline:
        sup.sleep(0.2)
