"""Rebalance storm: instances join and leave every 10-20 s while 200,000 commands flow.

Three `ledger serve` instances start on 12 partitions; then, at seeded intervals, one is
added (a new instance id, or one stopped earlier, whose on-disk state is now stale) or
removed (SIGTERM; static members do not leave the group, so its partitions move once its
session times out). The workload opens every account early in the stream, among earns,
joins (a user pays a room: the credit is routed to the room's owner, which moves too)
and room spends. Afterwards the history must show nothing lost or duplicated, every
routed credit applied once, and every rejection's reason true as far as the history's
order can prove (no `unknown_account` for an account opened before the command was sent,
no `misrouted` at all).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

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
from faults.report import CheckOptions
from faults.supervisor import (
    FAULTS_CREDIT_KEY,
    Supervisor,
    Timeline,
    covers,
)
from faults.workload import storm_commands
from ledger.settings import Settings
from ledger.topics import create_topics


@dataclass(frozen=True)
class StormConfig:
    bootstrap: str
    workdir: Path
    seed: int = 1
    partitions: int = 12
    commands: int = 200_000
    users: int = 2000
    rooms: int = 100
    instances: int = 3  # at the start
    min_instances: int = 1
    max_instances: int = 5
    every_s: tuple[float, float] = (10.0, 20.0)  # between two membership changes
    kill_fraction: float = 0.0  # removals done with SIGKILL instead of SIGTERM
    reuse_fraction: float = 0.5  # additions that restart an instance id stopped before
    rate: float = 0.0  # commands per second (0: as fast as the window allows)
    window: int = 20_000
    max_batch: int = 500
    credit_key: str = FAULTS_CREDIT_KEY
    room_visibility_s: float = 5.0
    start_timeout_s: float = 120.0
    idle_timeout_s: float = 600.0
    outcome_timeout_s: float = 60.0
    prefix: str = ""
    quiet: bool = False


def run_storm(cfg: StormConfig) -> ScenarioReport:
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    with client_logs(cfg.workdir):
        return _run_storm(cfg)


def _run_storm(cfg: StormConfig) -> ScenarioReport:
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    note = Timeline(cfg.quiet)
    rng = random.Random(cfg.seed)
    prefix = cfg.prefix or unique_prefix("storm", cfg.seed)
    settings = Settings(bootstrap=cfg.bootstrap, topic_prefix=prefix, partitions=cfg.partitions,
                        home=cfg.workdir, state_dir=cfg.workdir / "state")
    create_topics(settings)
    report = ScenarioReport("storm", cfg.seed, prefix)
    sup = Supervisor(settings, cfg.workdir, note, cfg.credit_key, cfg.max_batch)
    history = History()
    driver: Driver | None = None
    changes: list[str] = []
    note(f"storm seed {cfg.seed}: prefix {prefix}, {cfg.partitions} partitions, "
         f"{cfg.commands} commands, {cfg.instances} instances to start")
    try:
        ids = [f"storm-{n}" for n in range(cfg.instances)]
        for instance_id in ids:
            sup.start(instance_id)
        if not sup.wait_owned(covers(cfg.partitions, each_nonempty=True), cfg.start_timeout_s):
            raise TimeoutError("the instances did not share the partitions")
        note("owned: " + ", ".join(f"{i.instance_id} {sorted(i.owned() or ())}"
                                   for i in sup.running()))
        driver = Driver(settings, history, cfg.window, cfg.rate)
        stream = driver.stream(storm_commands(cfg.seed * 7919, cfg.commands, cfg.users,
                                              cfg.rooms, f"s{cfg.seed}"))
        next_id = cfg.instances
        while stream.is_alive():
            sup.sleep(rng.uniform(*cfg.every_s))
            if not stream.is_alive():
                break
            running = sup.running()
            stopped = [i for i in sup.instances.values() if not i.alive]
            grow = len(running) <= cfg.min_instances or (
                len(running) < cfg.max_instances and rng.random() < 0.5)
            if grow:
                if stopped and rng.random() < cfg.reuse_fraction:
                    inst = rng.choice(stopped)
                    inst.start()
                    what = f"restart {inst.instance_id}"
                else:
                    inst = sup.start(f"storm-{next_id}")
                    next_id += 1
                    what = f"add {inst.instance_id}"
            else:
                inst = rng.choice(running)
                if rng.random() < cfg.kill_fraction:
                    inst.kill()
                    what = f"SIGKILL {inst.instance_id}"
                else:
                    code = inst.stop()
                    what = f"remove {inst.instance_id} (exit {code})"
            changes.append(f"{note.elapsed:.1f}s {what}")
            note(f"{what}: {len(sup.running())} running, {driver.sent} sent, "
                 f"{history.in_flight} in flight")
        note(f"stream sent {driver.sent} commands; {history.in_flight} in flight")
        if driver.error is not None:
            raise RuntimeError(f"the driver failed: {driver.error!r}")
        settle(settings, report, sup, driver, history, note, cfg.idle_timeout_s,
               cfg.outcome_timeout_s)
    finally:
        stop_run(sup, driver, note)
    keep_history(report, history, sup, cfg.workdir)
    report.notes["membership changes"] = changes
    report.notes["incarnations"] = {i.instance_id: i.incarnations
                                    for i in sup.instances.values()}
    report.history = check(settings, history, CheckOptions(
        max_amount=settings.max_amount, room_visibility_s=cfg.room_visibility_s))
    report.seconds = note.elapsed
    note(report.summary())
    report.timeline = note.lines
    return report

