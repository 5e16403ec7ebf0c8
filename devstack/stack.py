"""Local development stack without Docker: KRaft Kafka (1 or 3 nodes) and PostgreSQL.

Everything lives under one home directory (``ledger.settings.default_home()``):
``kafka-4.1.1/lib`` (jar cache), ``kafka-<n>broker/node-<id>`` (config, data, logs, pid
file), ``kafka-<n>broker/auth`` and ``client-sasl*.properties`` (auth mode's passwords,
certificates and client settings), ``postgres/`` (pid file, log, state), ``stack.json``
(what ``up`` started) and ``credit.key`` (mode 600: the key ``ledger serve`` signs routed
credits with on this stack when LEDGER_CREDIT_KEY is unset). Only processes recorded in
those pid files are ever stopped.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from devstack import kafka, proc
from devstack import postgres as pg
from ledger import credits
from ledger.errors import InfrastructureError, UsageError

SIZES = (1, 3)
# Linux hands outgoing connections local ports from 32768 up (ip_local_port_range): a port
# there can be held by some client's connection (or its TIME_WAIT) just when a broker starts
# or restarts on it. Stacks placed by free_base keep every port below it.
EPHEMERAL_FLOOR = 32768
BASE_STEP = 100
BASE_TRIES = 6


@dataclass(frozen=True)
class ProcessInfo:
    """One process of the stack as its pid file and /proc see it."""

    name: str
    pid: int | None
    port: int
    alive: bool
    log: Path


@dataclass(frozen=True)
class StackInfo:
    """What runs (or last ran) in a home, and how to connect to it."""

    brokers: int = 0
    bootstrap: str | None = None
    postgres_url: str | None = None
    client_config: Path | None = None  # auth mode: --kafka-config for `bootstrap`
    tls_bootstrap: str | None = None  # auth mode: the SASL_SSL listeners
    tls_config: Path | None = None  # auth mode: --kafka-config for `tls_bootstrap`
    credit_key: Path | None = None  # the file `ledger serve` takes its credit key from
    processes: list[ProcessInfo] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return any(p.alive for p in self.processes)

    def describe(self) -> list[str]:
        """Human-readable lines: connection strings first, then one line per process."""
        lines = [] if self.running else ["nothing is running"]
        kafka_up = any(p.alive for p in self.processes if p.name != "postgres")
        if self.bootstrap and kafka_up and self.client_config:
            lines.append(f"kafka bootstrap: {self.bootstrap}  ({self.brokers} broker(s), "
                         f"SASL_PLAINTEXT + SCRAM-SHA-256: --kafka-config {self.client_config})")
        elif self.bootstrap and kafka_up:
            lines.append(f"kafka bootstrap: {self.bootstrap}  ({self.brokers} broker(s))")
        elif self.bootstrap:
            lines.append(f"kafka: not running (configured bootstrap {self.bootstrap})")
        if self.tls_bootstrap and self.tls_config and kafka_up:
            lines.append(f"kafka TLS bootstrap: {self.tls_bootstrap}  "
                         f"(SASL_SSL + SCRAM-SHA-256: --kafka-config {self.tls_config})")
        if self.credit_key and kafka_up:
            lines.append(f"credit key: {self.credit_key}  (used by `ledger serve` on this stack "
                         "when LEDGER_CREDIT_KEY is unset)")
        if self.postgres_url:
            lines.append(f"postgres: {self.postgres_url}")
        for p in self.processes:
            state = f"running, pid {p.pid}" if p.alive else "stopped"
            lines.append(f"  {p.name:<10} 127.0.0.1:{p.port:<6} {state}  log {p.log}")
        return lines


@dataclass(frozen=True)
class _Stack:
    spec: kafka.ClusterSpec
    jars_dir: Path


def _stack_file(home: Path) -> Path:
    return home / "stack.json"


def _load_stack(home: Path) -> _Stack | None:
    try:
        raw = json.loads(_stack_file(home).read_text())
    except (OSError, ValueError):
        return None
    spec = kafka.ClusterSpec(int(raw["brokers"]), int(raw["base_port"]), bool(raw["auth"]))
    return _Stack(spec, Path(raw["jars_dir"]))


def _save_stack(home: Path, stack: _Stack) -> None:
    doc = {"brokers": stack.spec.brokers, "base_port": stack.spec.base_port,
           "auth": stack.spec.auth, "jars_dir": str(stack.jars_dir)}
    _stack_file(home).write_text(json.dumps(doc) + "\n")


def credit_key_file(home: Path) -> Path:
    return home / "credit.key"


def credit_key_for(home: Path, bootstrap: str) -> str | None:
    """The dev stack's credit key if `bootstrap` names only this home's stack, else None."""
    stack = _load_stack(home)
    if stack is None or not _is_stack_bootstrap(bootstrap, stack.spec):
        return None
    # None for a stack started before keys were made: `up` again makes one.
    return credits.read_key_file(credit_key_file(home))


def _is_stack_bootstrap(bootstrap: str, spec: kafka.ClusterSpec) -> bool:
    ours = _servers(f"{spec.bootstrap},{spec.tls_bootstrap}")
    given = _servers(bootstrap)
    return bool(given) and given <= ours


def _servers(bootstrap: str) -> set[str]:
    """host:port of each server, with localhost as 127.0.0.1 (where the stack listens)."""
    found = set()
    for entry in bootstrap.split(","):
        server = entry.strip().lower().rpartition("://")[2]
        host, _, port = server.rpartition(":")
        if host and port:
            found.add(f"{'127.0.0.1' if host == 'localhost' else host}:{port}")
    return found


def _live_nodes(home: Path, brokers: int) -> list[int]:
    return [n for n in range(1, brokers + 1) if kafka.live_broker(home, brokers, n)]


# --- up --------------------------------------------------------------------------------------


def up(
    home: Path,
    brokers: int = 1,
    postgres: bool = False,
    auth: bool = False,
    base_port: int = 9092,
    pg_port: int = 5432,
    jars_dir: Path | None = None,
) -> StackInfo:
    """Start what is not running yet (idempotent) and return the stack's status.

    ``base_port``: first broker port; controllers listen on it + 10000. ``jars_dir``: the
    Kafka jar cache (default ``<home>/kafka-4.1.1/lib``), fetched with Maven when empty.
    """
    spec = _check_request(home, kafka.ClusterSpec(brokers, base_port, auth))
    missing = [n for n in spec.node_ids if not kafka.live_broker(home, spec.brokers, n)]
    for n in missing:  # before any download or state change: refuse early, change nothing
        proc.require_ports_free(spec.node_ports(n), f"Kafka node {n}")
    current = _load_stack(home)
    jars = jars_dir or (current.jars_dir if current else kafka.default_jars_dir(home))
    home.mkdir(parents=True, exist_ok=True)
    credits.ensure_key_file(credit_key_file(home))
    kafka.ensure_jars(jars)
    _start_nodes(home, spec, jars, missing)
    _save_stack(home, _Stack(spec, jars))
    if postgres:
        pg.up(home, pg_port)
    return status(home)


def stack_ports(spec: kafka.ClusterSpec) -> list[int]:
    """Every port a cluster of this shape listens on (brokers, controllers, TLS)."""
    return [p for n in spec.node_ids for p in spec.node_ports(n)]


def candidate_bases(start: int, brokers: int, auth: bool = False,
                    tries: int = BASE_TRIES) -> list[int]:
    """The base ports free_base tries: from start in steps of 100, all ports below the floor."""
    bases = (start + BASE_STEP * i for i in range(tries))
    return [b for b in bases
            if max(stack_ports(kafka.ClusterSpec(brokers, b, auth))) < EPHEMERAL_FLOOR]


def free_base(start: int, brokers: int, auth: bool = False, tries: int = BASE_TRIES) -> int:
    """The first candidate base port (see candidate_bases) whose every port is free."""
    for base in candidate_bases(start, brokers, auth, tries):
        if all(proc.port_free(p) for p in stack_ports(kafka.ClusterSpec(brokers, base, auth))):
            return base
    raise InfrastructureError(
        f"no free ports below {EPHEMERAL_FLOOR} for a {brokers}-broker stack from {start}")


def _check_request(home: Path, spec: kafka.ClusterSpec) -> kafka.ClusterSpec:
    """Refuse what would clobber a running stack; return the spec to run with."""
    if spec.brokers not in SIZES:
        raise UsageError(f"--brokers must be 1 or 3, got {spec.brokers}")
    if not (spec.base_port >= 1024 and spec.controller_port(spec.brokers) <= 65535):
        raise UsageError(f"base port {spec.base_port} leaves no room for controller ports")
    for other in SIZES:
        if other != spec.brokers and _live_nodes(home, other):
            raise UsageError(f"a {other}-broker stack is running in {home}; "
                             "stop it first with `ledger dev down`")
    current = _load_stack(home)
    if not current or not _live_nodes(home, spec.brokers) or current.spec == spec:
        return spec
    # Auth on or off changes what the broker port speaks: never hand out the other one.
    old = current.spec
    raise UsageError(
        f"the stack running in {home} has other settings ({old.brokers} broker(s) from port "
        f"{old.base_port}, auth {'on' if old.auth else 'off'}); "
        "stop it first with `ledger dev down`")


def _start_nodes(home: Path, spec: kafka.ClusterSpec, jars: Path, nodes: list[int]) -> None:
    if not nodes:
        return
    security = kafka.prepare_auth(home, spec)
    for n in nodes:
        kafka.write_node_config(home, spec, n, security)
    kafka.format_nodes(home, spec, jars, security)
    for n in nodes:
        kafka.start_node(home, spec, n, jars)
    try:
        kafka.wait_ready(home, spec, spec.node_ids, security)
    except InfrastructureError:
        _stop_nodes(home, spec.brokers, nodes)  # leave no half-started JVMs behind
        raise


# --- down ------------------------------------------------------------------------------------


def _broker_targets(home: Path) -> dict[int, tuple[str, list[str]]]:
    """pid -> (label, markers) for every live broker of any cluster in home."""
    found: dict[int, tuple[str, list[str]]] = {}
    for size in SIZES:
        for n in range(1, size + 1):
            pid = kafka.live_broker(home, size, n)
            if pid:
                found[pid] = (f"kafka node {n} ({size}-broker)", kafka.markers(home, size, n))
    return found


def down(home: Path, wipe: bool = False) -> list[str]:
    """Stop every process this home's pid files name (and wipe data if asked).

    Brokers get SIGTERM and Postgres SIGINT (fast shutdown); anything still alive after
    30 s gets SIGKILL. Jars are kept even with ``wipe``.
    """
    targets = _broker_targets(home)
    signals = {pid: signal.SIGTERM for pid in targets}
    pg_target = pg.stop_target(home)
    if pg_target:
        signals[pg_target[0]] = pg_target[1]
        targets[pg_target[0]] = ("postgres", pg_target[2])
    killed = proc.stop_pids(signals, {pid: m for pid, (_, m) in targets.items()})
    messages = [f"{'killed' if pid in killed else 'stopped'} {label} (pid {pid})"
                for pid, (label, _) in targets.items()]
    _remove_pid_files(home)
    _stack_file(home).unlink(missing_ok=True)
    if wipe:
        messages.extend(_wipe(home))
    return messages or ["nothing was running"]


def _remove_pid_files(home: Path) -> None:
    for size in SIZES:
        for n in range(1, size + 1):
            kafka.pid_file(home, size, n).unlink(missing_ok=True)
    pg.pid_file(home).unlink(missing_ok=True)


def _wipe(home: Path) -> list[str]:
    wiped = [str(kafka.cluster_dir(home, s)) for s in SIZES if kafka.cluster_dir(home, s).exists()]
    if credit_key_file(home).exists():  # what it signed is wiped with the data
        wiped.append(str(credit_key_file(home)))
        credit_key_file(home).unlink()
    for s in SIZES:
        shutil.rmtree(kafka.cluster_dir(home, s), ignore_errors=True)
    if pg.pg_dir(home).exists():
        wiped.append(str(pg.pg_dir(home)))
        pg.wipe(home)
    return [f"wiped {path}" for path in wiped]


def _stop_nodes(
    home: Path, brokers: int, nodes: Sequence[int], sig: signal.Signals = signal.SIGTERM
) -> list[int]:
    pids = {n: kafka.live_broker(home, brokers, n) for n in nodes}
    live = {pid: n for n, pid in pids.items() if pid}
    proc.stop_pids({pid: sig for pid in live},
                   {pid: kafka.markers(home, brokers, n) for pid, n in live.items()})
    return sorted(live)


# --- status and fault helpers ----------------------------------------------------------------


def status(home: Path) -> StackInfo:
    """What this home's pid files say is running, with connection strings."""
    stack = _load_stack(home)
    kafka_info = _kafka_status(home, stack.spec) if stack else StackInfo()
    state = pg.load_state(home)
    if state is None:
        return kafka_info
    pid = pg.live_pid(home)
    pg_proc = ProcessInfo("postgres", pid, state.port, pid is not None, pg.log_file(home))
    return replace(kafka_info, postgres_url=state.url if pid else None,
                   processes=[*kafka_info.processes, pg_proc])


def _kafka_status(home: Path, spec: kafka.ClusterSpec) -> StackInfo:
    procs = [
        ProcessInfo(f"kafka-{n}", proc.read_pid(kafka.pid_file(home, spec.brokers, n)),
                    spec.port(n), kafka.live_broker(home, spec.brokers, n) is not None,
                    kafka.node_dir(home, spec.brokers, n) / "server.log")
        for n in spec.node_ids
    ]
    key_file = credit_key_file(home)
    info = StackInfo(brokers=spec.brokers, bootstrap=spec.bootstrap, processes=procs,
                     credit_key=key_file if key_file.is_file() else None)
    files = kafka.auth_files(home, spec.brokers)
    if not (spec.auth and files.client_config.is_file() and files.tls_client_config.is_file()):
        return info
    return replace(info, client_config=files.client_config, tls_bootstrap=spec.tls_bootstrap,
                   tls_config=files.tls_client_config)


def _require_stack(home: Path) -> _Stack:
    stack = _load_stack(home)
    if stack is None:
        raise UsageError(f"no dev stack in {home}: run `ledger dev up` first")
    return stack


def kill_broker(home: Path, node_id: int) -> int:
    """SIGKILL one broker of the current stack (a crash, for fault tests); return its pid."""
    spec = _require_stack(home).spec
    if node_id not in spec.node_ids:
        raise UsageError(f"no Kafka node {node_id} in a {spec.brokers}-broker stack")
    killed = _stop_nodes(home, spec.brokers, [node_id], signal.SIGKILL)
    if not killed:
        raise UsageError(f"Kafka node {node_id} is not running")
    return killed[0]


def start_broker(home: Path, node_id: int) -> int:
    """(Re)start one broker of the current stack and wait until it answers; return its pid."""
    stack = _require_stack(home)
    spec = stack.spec
    if node_id not in spec.node_ids:
        raise UsageError(f"no Kafka node {node_id} in a {spec.brokers}-broker stack")
    pid = kafka.live_broker(home, spec.brokers, node_id)
    if pid:
        return pid
    proc.require_ports_free(spec.node_ports(node_id), f"Kafka node {node_id}")
    security = kafka.prepare_auth(home, spec)
    kafka.write_node_config(home, spec, node_id, security)
    pid = kafka.start_node(home, spec, node_id, stack.jars_dir)
    kafka.wait_ready(home, spec, [node_id], security)
    return pid
