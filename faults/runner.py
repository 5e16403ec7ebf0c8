"""Run a command workload while SIGKILLing the processor and the projector on a seeded
schedule; then check the journal, snapshots and projections against an independent fold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faults.commands import random_commands
from faults.fold import Fold, fold_journal
from faults.schedule import Kill, draw_schedule
from ledger.client import LedgerClient
from ledger.credits import generate_key
from ledger.domain import Actor, Command, OpenAccount
from ledger.journal import latest_by_key
from ledger.processor.kafka import pending_commands
from ledger.records import Outcome
from ledger.settings import ENV_CREDIT_KEY, Settings
from ledger.topics import create_topics

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class FaultConfig:
    bootstrap: str
    store: str
    workdir: Path
    seed: int = 1
    commands: int = 1_000_000
    kills: int = 50
    users: int = 2000
    rooms: int = 100
    partitions: int = 6
    window: int = 20_000  # commands in flight at most: kills land while work is under way
    prefix: str = ""


@dataclass
class FaultReport:
    seed: int
    schedule: list[dict[str, Any]]
    commands_sent: int = 0
    accepted: int = 0
    rejected: int = 0
    processor_kills: int = 0
    projector_kills: int = 0
    journal_events: int = 0
    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost == 0 and self.duplicated == 0


class Service:
    """A `ledger` subprocess that can be SIGKILLed and restarted."""

    def __init__(self, cfg: FaultConfig, settings: Settings, name: str, args: list[str]) -> None:
        self.cfg, self.settings, self.name, self.args = cfg, settings, name, args
        self.log = cfg.workdir / f"{name}.log"
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = [
            sys.executable,
            "-m",
            "cli.main",
            "--bootstrap",
            self.settings.bootstrap,
            "--topic-prefix",
            self.settings.topic_prefix,
            "--partitions",
            str(self.settings.partitions),
            "--store",
            self.settings.store,
            "-v",
            *self.args,
        ]
        with self.log.open("ab") as out:
            return subprocess.Popen(argv, stdout=out, stderr=out, cwd=REPO, env=serve_env())

    def kill_and_restart(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = self._spawn()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def commands(cfg: FaultConfig) -> Iterator[Command]:
    """The workload: the same seed always sends the same commands."""
    return random_commands(cfg.seed * 7919, cfg.commands, cfg.users, cfg.rooms, f"f{cfg.seed}")


class Outcomes:
    """Outcomes by command id; futures are dropped once resolved so memory stays flat."""

    def __init__(self) -> None:
        self.by_id: dict[str, Outcome] = {}
        self.in_flight = 0
        self._lock = threading.Lock()

    def track(self, command_id: str, future: Future[Outcome]) -> None:
        with self._lock:
            self.in_flight += 1
        future.add_done_callback(lambda f: self._done(command_id, f))

    def _done(self, command_id: str, future: Future[Outcome]) -> None:
        with self._lock:
            self.by_id[command_id] = future.result()
            self.in_flight -= 1


def run(cfg: FaultConfig) -> FaultReport:
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    prefix = cfg.prefix or f"faults{cfg.seed}x{int(time.time())}"
    settings = Settings(
        bootstrap=cfg.bootstrap,
        topic_prefix=prefix,
        partitions=cfg.partitions,
        store=cfg.store,
        home=cfg.workdir,
    )
    create_topics(settings)
    schedule = draw_schedule(cfg.seed, cfg.commands, cfg.kills)
    report = FaultReport(cfg.seed, [asdict(k) for k in schedule])
    print(
        f"seed {cfg.seed}: {cfg.commands} commands, {len(schedule)} kills, prefix {prefix}",
        flush=True,
    )
    started = time.monotonic()
    services = {
        "processor": Service(cfg, settings, "processor", ["serve", "--instance-id", "fault-p"]),
        "projector": Service(cfg, settings, "projector", ["project"]),
    }
    client, outcomes = LedgerClient(settings), Outcomes()
    try:
        _open_accounts(cfg, client, outcomes)
        _drive(cfg, client, outcomes, schedule, services, report)
        _await_all(outcomes, report.commands_sent + cfg.users + cfg.rooms)
    finally:
        client.close()
        services["processor"].stop()
        services["projector"].stop()
    _finish_projection(settings)
    report.seconds = time.monotonic() - started
    check(settings, outcomes.by_id, report)
    return report


def _open_accounts(cfg: FaultConfig, client: LedgerClient, outcomes: Outcomes) -> None:
    for account in [f"user:u{i}" for i in range(cfg.users)] + [
        f"room:r{i}" for i in range(cfg.rooms)
    ]:
        cmd = OpenAccount(
            command_id=f"open-{account}",
            actor=Actor.SYSTEM,
            reason="signup",
            account=account,
            grant=100 if account.startswith("user") else 0,
        )
        fut = client.submit(cmd, wait=True)
        assert fut is not None
        outcomes.track(cmd.command_id, fut)
    client.flush(120)
    _await_all(outcomes, cfg.users + cfg.rooms)


def _drive(
    cfg: FaultConfig,
    client: LedgerClient,
    outcomes: Outcomes,
    schedule: list[Kill],
    services: dict[str, Service],
    report: FaultReport,
) -> None:
    pending = list(schedule)
    for n, cmd in enumerate(commands(cfg), 1):
        while outcomes.in_flight >= cfg.window:
            client.poll(0.05)
        fut = client.submit(cmd, wait=True)
        assert fut is not None
        outcomes.track(cmd.command_id, fut)
        report.commands_sent = n
        while pending and pending[0].after_commands <= n:
            kill = pending.pop(0)
            services[kill.target].kill_and_restart()
            setattr(report, f"{kill.target}_kills", getattr(report, f"{kill.target}_kills") + 1)
            print(f"  SIGKILL {kill.target} after {n} commands", flush=True)
        if n % 50_000 == 0:
            print(f"  {n} commands sent, {len(outcomes.by_id)} outcomes", flush=True)
    client.flush(300)


def _await_all(outcomes: Outcomes, expected: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while len(outcomes.by_id) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(outcomes.by_id)} of {expected} outcomes arrived")
        time.sleep(0.2)


def _finish_projection(settings: Settings) -> None:
    """Credits still routed after the last outcome, then the projector catching up."""
    argv = [
        sys.executable,
        "-m",
        "cli.main",
        "--bootstrap",
        settings.bootstrap,
        "--topic-prefix",
        settings.topic_prefix,
        "--store",
        settings.store,
    ]
    proc = subprocess.Popen(
        [*argv, "serve", "--instance-id", "fault-p"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=serve_env(),
    )
    try:
        _wait_idle(settings)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    subprocess.run([*argv, "project", "--until-caught-up"], cwd=REPO, check=True)


def _wait_idle(settings: Settings, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while pending_commands(settings):
        if time.monotonic() > deadline:
            raise TimeoutError("the processor did not finish its commands")
        time.sleep(0.5)


def check(settings: Settings, outcomes: dict[str, Outcome], report: FaultReport) -> None:
    fold = fold_journal(settings.bootstrap, settings.topic("events"))
    report.journal_events = fold.events
    accepted = {cid for cid, o in outcomes.items() if o.accepted}
    workload = [o for cid, o in outcomes.items() if not cid.startswith("open-")]
    report.accepted = sum(o.accepted for o in workload)
    report.rejected = len(workload) - report.accepted
    expected = {cid for cid in accepted if outcomes[cid].event_ids}
    report.lost = len(expected - set(fold.events_by_command))
    report.duplicated = sum(n - 1 for n in fold.events_by_command.values() if n > 1)
    strays = set(fold.events_by_command) - expected
    if strays:
        report.problems.append(f"{len(strays)} journal events of commands not accepted")
    if fold.unbalanced:
        report.problems.append(f"{len(fold.unbalanced)} unbalanced events")
    if any(n > 1 for n in fold.event_ids.values()):
        report.problems.append("an event id appears twice")
    _check_snapshots(settings, fold, report)
    _check_store(settings, fold, report)


def _check_snapshots(settings: Settings, fold: Fold, report: FaultReport) -> None:
    snap = {rec["account"]: rec["balance"]
            for rec in latest_by_key(settings, "balances", "balance").values()}
    parties = {a: b for a, b in fold.balances.items() if not a.startswith("system:")}
    wrong = [a for a in set(parties) | set(snap) if parties.get(a, 0) != snap.get(a, 0)]
    if wrong:
        report.problems.append(f"{len(wrong)} processor snapshots differ from the fold")
    if any(b < 0 for b in snap.values()):
        report.problems.append("a user or room balance is below its floor")


def _check_store(settings: Settings, fold: Fold, report: FaultReport) -> None:
    rows, audit, dupes = _store_rows(settings.store)
    wrong = [a for a in set(fold.balances) | set(rows) if fold.balances.get(a, 0) != rows.get(a, 0)]
    if wrong:
        report.problems.append(f"{len(wrong)} projected balances differ from the fold")
    if audit != fold.postings:
        report.problems.append(f"audit_log has {audit} rows, the journal {fold.postings} postings")
    if dupes:
        report.problems.append(f"{dupes} audit rows appear twice")


def _store_rows(url: str) -> tuple[dict[str, int], int, int]:
    dupes_sql = (
        'SELECT count(*) FROM (SELECT topic, "partition", "offset", account '
        "FROM audit_log GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d"
    )
    if url.startswith("duckdb:"):
        import duckdb

        con = duckdb.connect(url.removeprefix("duckdb:///"), read_only=True)
        try:
            bal = dict(con.execute("SELECT account, balance FROM balances").fetchall())
            audit = con.execute("SELECT count(*) FROM audit_log").fetchone()
            dupes = con.execute(dupes_sql).fetchone()
        finally:
            con.close()
    else:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as pg:
            bal = dict(pg.execute("SELECT account, balance FROM balances").fetchall())
            audit = pg.execute("SELECT count(*) FROM audit_log").fetchone()
            dupes = pg.execute(dupes_sql).fetchone()
    return (
        {str(a): int(b) for a, b in bal.items()},
        int(audit[0]) if audit else 0,
        int(dupes[0]) if dupes else 0,
    )


def write_report(report: FaultReport, path: Path) -> None:
    path.write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2))


_KEY = generate_key()


def serve_env() -> dict[str, str]:
    """`ledger serve` refuses to run without a credit key: the run's own, unless one is set."""
    return {**os.environ, ENV_CREDIT_KEY: os.environ.get(ENV_CREDIT_KEY) or _KEY}
