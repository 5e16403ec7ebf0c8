"""`ledger demo`: the study-room workload end to end, on a fresh machine in one command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from cli.context import settings_of
from cli.render import print_table
from ledger.demo import (
    ANALYST_QUESTION,
    ANALYST_SQL,
    DemoResult,
    DemoSize,
    StudyRoomApp,
    processor_credit_key,
)
from ledger.errors import ExitCode, InfrastructureError, LedgerError, RejectedError
from ledger.kafka import check_reachable
from ledger.settings import DEFAULT_BOOTSTRAP, ENV_CREDIT_KEY, Settings
from ledger.topics import create_topics
from ledger.wiring import build_client


@click.command("demo")
@click.option(
    "--users", type=click.IntRange(1), default=300, show_default=True, help="Users who sign up."
)
@click.option(
    "--rooms", type=click.IntRange(1), default=30, show_default=True, help="Study rooms created."
)
@click.option(
    "--sessions",
    type=click.IntRange(0),
    default=6000,
    show_default=True,
    help="Verified study sessions (earn commands).",
)
@click.option(
    "--joins",
    type=click.IntRange(0),
    default=3000,
    show_default=True,
    help="Room joins (fee payments); some are refused for lack of points.",
)
@click.option(
    "--reversals",
    type=click.IntRange(0),
    default=20,
    show_default=True,
    help="Study sessions revoked afterwards (reversed earn events).",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Random seed.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="DuckDB file the replay writes (default: <home>/demo/ledger-demo.duckdb).",
)
@click.pass_context
def demo(
    ctx: click.Context,
    users: int,
    rooms: int,
    sessions: int,
    joins: int,
    reversals: int,
    seed: int,
    out: Path | None,
) -> None:
    """Play the study-room app: processor, projector, replay into DuckDB, verify; end with
    a snapshot taken while the projector runs and one analyst's question asked of it."""
    settings = _ensure_stack(settings_of(ctx))
    work = settings.home / "demo"
    work.mkdir(parents=True, exist_ok=True)
    out = out or work / "ledger-demo.duckdb"
    _step(f"creating topics ({settings.topic_prefix}.*) on {settings.bootstrap}")
    create_topics(settings)
    size = DemoSize(users, rooms, sessions, joins, max(1, joins // 5), reversals, seed)
    services = [
        _spawn(settings, work, "serve", ["serve", "--instance-id", "demo"],
               {ENV_CREDIT_KEY: processor_credit_key(settings, work)}),
        _spawn(settings, work, "project", ["project"]),
    ]
    snapshot = out.with_name(out.stem + "-snapshot.duckdb")
    try:
        _step("playing the study-room app")
        result = _play(settings, size)
        _step(f"taking a snapshot for analysts into {snapshot} while the projector runs")
        _take_snapshot(settings, snapshot, result.events)
    finally:
        for proc in services:
            _stop(proc)
    _step(f"replaying the journal from offset zero into {out}")
    if out.exists():
        out.unlink()
    _ledger(settings, ["replay", "--out", str(out)])
    _step("verifying the replayed state against the log")
    verdict = _ledger(settings, ["--store", f"duckdb:///{out}", "verify", "--json"], capture=True)
    _summary(result, out, json.loads(verdict.strip().splitlines()[-1]))
    _analyst_example(snapshot)


def _take_snapshot(settings: Settings, snapshot: Path, events: int) -> None:
    """`ledger snapshot` of the live store (the projector takes it), again until it holds
    every event the app wrote (the projector may be a moment behind); each one after the
    first copies only the rows added since."""
    deadline = time.monotonic() + settings.tuning.demo_catch_up_s
    while True:
        _ledger(settings, ["snapshot", "--out", str(snapshot)], capture=True)
        if _events_in(snapshot) >= events or time.monotonic() > deadline:
            return
        time.sleep(settings.tuning.demo_retry_s)


def _events_in(path: Path) -> int:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        ((n,),) = con.execute("SELECT count(DISTINCT event_id) FROM audit_log").fetchall()
    finally:
        con.close()
    return int(n)


def _analyst_example(snapshot: Path) -> None:
    """One of docs/analysts.md's questions, answered from the snapshot."""
    import duckdb

    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        cur = con.execute(ANALYST_SQL)
        names = [d[0] for d in cur.description or []]
        rows = [list(r) for r in cur.fetchall()]
    finally:
        con.close()
    click.echo(f"snapshot for analysts (taken while the projector ran): {snapshot}")
    click.echo(f"  {ANALYST_QUESTION}")
    for line in ANALYST_SQL.splitlines():
        click.echo(f"    {line}")
    print_table(names, rows[:5])
    click.echo(f"  ({len(rows)} rows; nine more questions and every column: docs/analysts.md)")


def _ensure_stack(settings: Settings) -> Settings:
    """The configured broker, or the local dev stack started for the default one."""
    try:
        check_reachable(settings, timeout=5)
        return settings
    except InfrastructureError:
        if settings.bootstrap != DEFAULT_BOOTSTRAP:
            raise
    import devstack

    _step("no broker at localhost:9092: starting the local stack (ledger dev up)")
    info = devstack.up(settings.home)
    for line in info.describe():
        click.echo(f"   {line}", err=True)
    return settings.with_(bootstrap=info.bootstrap)


def _global_args(settings: Settings) -> list[str]:
    args = [
        "--bootstrap",
        settings.bootstrap,
        "--topic-prefix",
        settings.topic_prefix,
        "--partitions",
        str(settings.partitions),
        "--store",
        settings.store,
    ]
    config = os.environ.get("LEDGER_KAFKA_CONFIG")
    return [*args, "--kafka-config", config] if config else args


def _spawn(settings: Settings, work: Path, name: str, args: list[str],
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A service in the background; `env` (a secret, say) goes in its environment, not argv."""
    log = (work / f"{name}.log").open("ab")
    _step(f"starting `ledger {' '.join(args)}` (log: {work / (name + '.log')})")
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", *_global_args(settings), "-v", *args],
        stdout=log,
        stderr=log,
        env={**os.environ, **(env or {})},
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ledger(settings: Settings, args: list[str], capture: bool = False) -> str:
    argv = [sys.executable, "-m", "cli.main", *_global_args(settings), *args]
    done = subprocess.run(argv, stdout=subprocess.PIPE if capture else None, text=True)
    if done.returncode == ExitCode.REJECTED and capture:
        return done.stdout  # a failed verification still has a report to show
    if done.returncode != 0:
        raise LedgerError(f"`ledger {' '.join(args)}` failed with exit code {done.returncode}")
    return done.stdout or ""


def _play(settings: Settings, size: DemoSize) -> DemoResult:
    client = build_client(settings)

    def progress(phase: str, done: int, total: int) -> None:
        # Rewrite one line on a terminal; one line per update in a log.
        tty = sys.stderr.isatty()
        line = f"   {phase}: {done}/{total} outcomes"
        click.echo(("\r" if tty else "") + line, nl=done == total or not tty, err=True)

    try:
        return StudyRoomApp(settings, size, client, progress).play()
    finally:
        client.close()


def _step(text: str) -> None:
    click.echo(f"==> {text}", err=True)


def _summary(result: DemoResult, out: Path, verdict: dict[str, object]) -> None:
    import duckdb

    total = len(result.outcomes)
    click.echo("")
    click.echo(
        f"commands: {total} in {result.seconds:.1f}s "
        f"({total / max(result.seconds, 1e-9):.0f}/s submit-to-outcome)"
    )
    for kind, counts in sorted(result.counts().items()):
        parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        click.echo(f"  {kind:<12} {parts}")
    con = duckdb.connect(str(out), read_only=True)
    try:
        top = con.execute(
            "SELECT account, balance FROM balances WHERE account NOT LIKE "
            "'system:%' ORDER BY balance DESC, account LIMIT 5"
        ).fetchall()
    finally:
        con.close()
    click.echo("top balances: " + ", ".join(f"{a} {b}" for a, b in top))
    click.echo(
        f"verify: ok={verdict.get('ok')} events={verdict.get('events')} "
        f"accounts={verdict.get('accounts')} checksum={verdict.get('checksum')}"
    )
    click.echo(f"DuckDB file for analysts: {out}")
    click.echo(
        f"  try: ledger --store duckdb:///{out} query "
        '"SELECT kind, count(*), sum(amount) FROM audit_log WHERE amount > 0 '
        'GROUP BY kind ORDER BY 2 DESC"'
    )
    if not verdict.get("ok"):
        raise RejectedError("verification of the replayed state failed (see the report above)")
