"""PostgreSQL for the dev stack: initdb once, run the server as an unprivileged user."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

from devstack import proc
from ledger.errors import InfrastructureError, UsageError

PG_GLOB = "/usr/lib/postgresql/*/bin/initdb"
PG_USER = "postgres"
DATABASE = "ledger"
READY_TIMEOUT_S = 60.0
PORT_TRIES = 20
NOT_FOUND = ("PostgreSQL server binaries not found: install them with "
             "`apt-get install -y postgresql`")
HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"


@dataclass(frozen=True)
class PgState:
    """Where this home's cluster lives and the port it was last started on."""

    run_dir: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"


def pg_dir(home: Path) -> Path:
    return home / "postgres"


def pid_file(home: Path) -> Path:
    return pg_dir(home) / "postgres.pid"


def log_file(home: Path) -> Path:
    return pg_dir(home) / "postgres.log"


def load_state(home: Path) -> PgState | None:
    try:
        raw = json.loads((pg_dir(home) / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return PgState(Path(raw["run_dir"]), int(raw["port"]))


def _save_state(home: Path, state: PgState) -> None:
    doc = {"run_dir": str(state.run_dir), "port": state.port}
    (pg_dir(home) / "state.json").write_text(json.dumps(doc) + "\n")


def markers(state: PgState) -> list[str]:
    return ["postgres", str(state.data_dir)]


def live_pid(home: Path) -> int | None:
    state = load_state(home)
    return proc.live_pid(pid_file(home), markers(state)) if state else None


def bin_dir() -> Path:
    """The highest installed major version's bin directory."""
    found = sorted(Path("/").glob(PG_GLOB.lstrip("/")), key=_major, reverse=True)
    if not found:
        raise InfrastructureError(NOT_FOUND)
    return found[0].parent


def _major(initdb: Path) -> int:
    m = re.search(r"/postgresql/(\d+)/", str(initdb))
    return int(m.group(1)) if m else 0


def _run_user() -> str | None:
    # Postgres refuses to run as root; as anyone else it runs as the caller.
    return PG_USER if os.geteuid() == 0 else None


def _traversable(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in [path, *path.parents] if p.exists())


def _choose_run_dir(home: Path) -> Path:
    """Data and socket dir: under home when the postgres user can reach it, else /var/tmp."""
    local = pg_dir(home) / "run"
    if _run_user() is None or _traversable(pg_dir(home)):
        return local
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:10]
    return Path("/var/tmp") / f"points-ledger-pg-{os.getuid()}-{digest}"


def _prepare_run_dir(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    user = _run_user()
    if user is None:
        return
    pw = pwd.getpwnam(user)
    owner = run_dir.stat().st_uid
    if owner not in (0, pw.pw_uid):
        raise InfrastructureError(f"{run_dir} belongs to uid {owner}, not root or {user}")
    os.chown(run_dir, pw.pw_uid, pw.pw_gid)
    run_dir.chmod(0o700)


def _initdb(bins: Path, state: PgState) -> None:
    if (state.data_dir / "PG_VERSION").is_file():
        return
    user = _run_user()
    argv = [str(bins / "initdb"), "-D", str(state.data_dir), "-U", PG_USER, "-E", "UTF8",
            "--no-locale", "--auth=trust"]
    done = subprocess.run(argv, cwd=state.run_dir, capture_output=True, text=True, user=user,
                          group=user, extra_groups=[] if user else None, timeout=300)
    if done.returncode != 0:
        raise InfrastructureError(f"initdb failed: {' '.join(argv)}\n{done.stderr[-2000:]}")
    (state.data_dir / "pg_hba.conf").write_text(HBA)  # trust, but on loopback only


def _free_port(first: int) -> int:
    for port in range(first, first + PORT_TRIES):
        if proc.port_free(port):
            return port
    raise UsageError(f"no free port for PostgreSQL in {first}-{first + PORT_TRIES - 1}")


def up(home: Path, port: int = 5432) -> PgState:
    """Start this home's PostgreSQL (initdb on first use); idempotent."""
    previous = load_state(home)
    if previous and live_pid(home):
        return previous
    bins = bin_dir()
    pg_dir(home).mkdir(parents=True, exist_ok=True)
    run_dir = previous.run_dir if previous else _choose_run_dir(home)
    state = PgState(run_dir, _free_port(port))
    _prepare_run_dir(run_dir)
    _initdb(bins, state)
    _save_state(home, state)
    _start(bins, home, state)
    _wait_ready(home, state)
    _ensure_database(state)
    return state


def _start(bins: Path, home: Path, state: PgState) -> None:
    argv = [str(bins / "postgres"), "-D", str(state.data_dir), "-p", str(state.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={state.run_dir}",
            "-c", "fsync=on"]
    proc.spawn(argv, log_file(home), pid_file(home), state.run_dir, user=_run_user())


def _connect(state: PgState, dbname: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(host="127.0.0.1", port=state.port, user=PG_USER, dbname=dbname,
                           connect_timeout=2, autocommit=True)


def _accepts(state: PgState) -> bool:
    try:
        with _connect(state, "postgres"):
            return True
    except psycopg.OperationalError:
        return False


def _wait_ready(home: Path, state: PgState) -> None:
    def failure(reason: str) -> InfrastructureError:
        log = log_file(home)
        return InfrastructureError(f"PostgreSQL on 127.0.0.1:{state.port} did not come up "
                                   f"({reason}); log {log}:\n{proc.tail(log)}")

    proc.wait_until(lambda: _accepts(state), lambda: live_pid(home) is not None,
                    READY_TIMEOUT_S, failure)


def _ensure_database(state: PgState) -> None:
    with _connect(state, "postgres") as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if exists.fetchone() is None:
            conn.execute(f"CREATE DATABASE {DATABASE}")


def stop_target(home: Path) -> tuple[int, signal.Signals, list[str]] | None:
    """(pid, signal, markers) to stop this home's server; SIGINT is Postgres's fast shutdown."""
    state = load_state(home)
    pid = live_pid(home)
    return (pid, signal.SIGINT, markers(state)) if pid and state else None


def wipe(home: Path) -> None:
    state = load_state(home)
    if state is not None:
        shutil.rmtree(state.run_dir, ignore_errors=True)
    shutil.rmtree(pg_dir(home), ignore_errors=True)
