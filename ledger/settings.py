"""Settings: one frozen object with its tunables (Tuning), and every environment variable.

Code that has the settings reads its sizes, intervals and timeouts from settings.tuning;
pure helpers take them as arguments whose defaults are the Tuning's."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ledger.errors import UsageError

ENV_BOOTSTRAP = "LEDGER_BOOTSTRAP"
ENV_TOPIC_PREFIX = "LEDGER_TOPIC_PREFIX"
ENV_KAFKA_CONFIG = "LEDGER_KAFKA_CONFIG"
ENV_STORE = "LEDGER_STORE"
ENV_PARTITIONS = "LEDGER_PARTITIONS"
ENV_REPLICATION = "LEDGER_REPLICATION_FACTOR"
ENV_MAX_AMOUNT = "LEDGER_MAX_AMOUNT"
ENV_HOME = "LEDGER_HOME"
ENV_LOG_FORMAT = "LEDGER_LOG_FORMAT"
ENV_LOG_LEVEL = "LEDGER_LOG_LEVEL"  # DEBUG, INFO, WARNING (default), ERROR, CRITICAL
ENV_CREDIT_KEY = "LEDGER_CREDIT_KEY"  # secret shared by processors: signs routed credits
ENV_CREDIT_KEYS = "LEDGER_CREDIT_KEYS"  # other keys still accepted, comma-separated; never sign
ENV_DEDUP_WINDOW = "LEDGER_DEDUP_WINDOW"  # how long command ids are remembered: 7d, 12h, 90s
ENV_STATE_DIR = "LEDGER_STATE_DIR"  # the processor's on-disk state (default <home>/state)
ENV_TEST_BOOTSTRAP = "LEDGER_TEST_BOOTSTRAP"
ENV_TEST_POSTGRES = "LEDGER_TEST_POSTGRES"
ENV_TEST_KAFKA_PORT = "LEDGER_TEST_KAFKA_PORT"  # the test session's own stack, when it starts one
ENV_TEST_PG_PORT = "LEDGER_TEST_PG_PORT"

DEFAULT_BOOTSTRAP = "localhost:9092"
DEFAULT_PREFIX = "points"
DEFAULT_STORE = "duckdb:///ledger.duckdb"
DEFAULT_MAX_AMOUNT = 1_000_000_000
SECRET_KEYS = ("password", "secret", "key.pem", "token")
DEFAULT_DEDUP_WINDOW_S = 7 * 24 * 3600
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def default_home() -> Path:
    """Where the dev stack keeps jars, data and pid files (outside the repo)."""
    return Path(os.environ.get(ENV_HOME, str(Path.home() / ".cache" / "points-ledger")))


@dataclass(frozen=True)
class Tuning:
    """Operational tunables of the read path and the clients: batch sizes, intervals,
    timeouts, worker counts. Defaults are the measured ones (docs/performance.md); the
    processor's loop has its own (ledger.processor's ProcessorTuning)."""

    # The projector (`ledger project`): batches, idle polls, upkeep, store outages.
    project_batch_records: int = 50_000  # most records per store transaction
    project_batch_ms: int = 200  # longest a batch collects records
    project_consume_max: int = 10_000  # records asked of one consume call
    project_idle_poll_s: float = 0.5  # a consume call's wait when no batch is pending
    project_upkeep_s: float = 2.0  # how often lag is measured and an idle store pinged
    project_retry_first_s: float = 0.5  # first wait after the store went away
    project_retry_max_s: float = 15.0  # longest wait between retries of an unavailable store
    # Replay: decoded batches and the processes decoding them.
    replay_batch_records: int = 25_000  # records per decoded batch
    replay_in_flight: int = 2  # decoded batches waiting for the writer: bounds memory
    replay_max_workers: int = 8  # decoder processes at most (0: decode in the replay's process)
    replay_writer_thread: bool = True  # write on a thread beside decoding (False: one after
    # the other on one thread, as `python -m bench.profile` runs it for cProfile)
    replay_queue_per_worker: int = 2  # decoded batches waiting per decoder process
    verify_max_workers: int = 4  # processes of verify's second, independent reading
    # Snapshots a projector takes when `ledger snapshot` or `ledger export` asks.
    snapshot_poll_s: float = 0.5  # how often a projector looks for requests, a command for answers
    snapshot_claim_s: float = 15.0  # how long a command waits for a projector to claim its request
    snapshot_wait_s: float = 1800.0  # how long a command waits for its snapshot by default
    snapshot_batch_rows: int = 100_000  # rows per Arrow batch read of a DuckDB store
    # Reading the topics to their ends (projector, replay, verify).
    kafka_request_s: float = 10.0  # a metadata or watermark request's timeout
    read_consume_max: int = 10_000  # records asked of one consume call of a bounded read
    read_stall_s: float = 60.0  # no records for this long while some are known to exist: fail
    read_poll_s: float = 0.2  # a bounded read's wait in one consume call
    lookup_wait_s: float = 5.0  # a reversal's event, a new account: longer, retry the batch
    decode_poll_s: float = 1.0  # replay's wait for a decoded batch before it checks its decoders
    deadletter_flush_s: float = 30.0  # how long a projector waits for its dead letters' acks
    # Health: the broker probe of the metrics server; a loop taken for stuck (/healthz): longer
    # than the longest wait one iteration may legitimately take (a new owner's restore waits
    # up to 90 s for stable offsets and 90 s for an open changelog transaction, a
    # transaction times out after 60 s).
    broker_probe_every_s: float = 5.0
    stall_after_s: float = 300.0
    # The commands' own waits.
    progress_every_s: float = 5.0  # a progress log line this often when stderr is no terminal
    demo_catch_up_s: float = 120.0  # how long `ledger demo` waits for its projector's snapshot
    demo_retry_s: float = 0.5  # between its snapshots meanwhile


@dataclass(frozen=True)
class Settings:
    bootstrap: str = DEFAULT_BOOTSTRAP
    topic_prefix: str = DEFAULT_PREFIX
    kafka_extra: Mapping[str, str] = field(default_factory=dict)
    store: str = DEFAULT_STORE
    partitions: int = 6
    replication_factor: int | None = None  # None: derive from broker count
    max_amount: int = DEFAULT_MAX_AMOUNT
    home: Path = field(default_factory=default_home)
    log_format: str = "text"
    dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S
    state_dir: Path | None = None  # None: <home>/state
    credit_key: str = field(default="", repr=False)  # a secret: never in repr or logs
    # Keys a credit may also be signed with during a rotation (secrets too); never sign.
    accepted_credit_keys: tuple[str, ...] = field(default=(), repr=False)
    tuning: Tuning = field(default_factory=Tuning)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    @property
    def state_path(self) -> Path:
        """Where the processor keeps its on-disk state."""
        return self.state_dir if self.state_dir is not None else self.home / "state"

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def redacted_kafka_extra(self) -> dict[str, str]:
        """Extra client properties safe to print: secrets replaced."""
        return {k: ("***" if _is_secret(k) else v) for k, v in self.kafka_extra.items()}

    def __repr__(self) -> str:
        # Settings end up in logs and test reports: never with a password in them.
        shown = (
            f"{f.name}="
            f"{self.redacted_kafka_extra() if f.name == 'kafka_extra' else getattr(self, f.name)!r}"
            for f in fields(self)
            if f.repr  # the credit keys and any other secret field are left out
        )
        return f"Settings({', '.join(shown)})"


def _is_secret(key: str) -> bool:
    return any(s in key.lower() for s in SECRET_KEYS)


def read_kafka_config(path: str | Path | None) -> dict[str, str]:
    """Parse a Java-style properties file of extra client settings (SASL, TLS)."""
    if not path:
        return {}
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UsageError(f"cannot read --kafka-config {path}: {e.strerror}") from e
    props: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        sep = min((i for i in (line.find("="), line.find(":")) if i > 0), default=-1)
        if sep < 0:
            raise UsageError(f"--kafka-config {path}:{n}: expected key=value")
        props[line[:sep].strip()] = line[sep + 1 :].strip()
    return props


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise UsageError(f"{name} must be an integer, got {raw!r}") from e


def parse_duration(text: str, name: str = "duration") -> float:
    """Seconds in '7d', '12h', '30m', '90s', '500ms' or a bare number of seconds."""
    raw = text.strip().lower()
    unit = next((u for u in ("ms", "s", "m", "h", "d") if raw.endswith(u)), "")
    number = raw[: len(raw) - len(unit)] if unit else raw
    try:
        seconds = float(number) * _DURATION_UNITS.get(unit, 1)
    except ValueError as e:
        raise UsageError(f"{name} must be a duration such as 7d, 12h or 90s, got {text!r}") from e
    if seconds <= 0:
        raise UsageError(f"{name} must be positive, got {text!r}")
    return seconds


def _key_list(raw: str | None) -> tuple[str, ...]:
    """A comma-separated list of keys, blanks dropped (so a trailing comma is harmless)."""
    return tuple(k.strip() for k in (raw or "").split(",") if k.strip())


def from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment; explicit overrides (CLI options) win."""
    env = os.environ if env is None else env
    rf_raw = env.get(ENV_REPLICATION)
    base = Settings(
        bootstrap=env.get(ENV_BOOTSTRAP, DEFAULT_BOOTSTRAP),
        topic_prefix=env.get(ENV_TOPIC_PREFIX, DEFAULT_PREFIX),
        kafka_extra=read_kafka_config(env.get(ENV_KAFKA_CONFIG)),
        store=env.get(ENV_STORE, DEFAULT_STORE),
        partitions=_int_env(env, ENV_PARTITIONS, 6),
        replication_factor=int(rf_raw) if rf_raw else None,
        max_amount=_int_env(env, ENV_MAX_AMOUNT, DEFAULT_MAX_AMOUNT),
        home=Path(env[ENV_HOME]) if env.get(ENV_HOME) else default_home(),
        log_format=env.get(ENV_LOG_FORMAT, "text"),
        dedup_window_s=parse_duration(env[ENV_DEDUP_WINDOW], ENV_DEDUP_WINDOW)
        if env.get(ENV_DEDUP_WINDOW)
        else DEFAULT_DEDUP_WINDOW_S,
        state_dir=Path(env[ENV_STATE_DIR]) if env.get(ENV_STATE_DIR) else None,
        credit_key=env.get(ENV_CREDIT_KEY, "").strip(),
        accepted_credit_keys=_key_list(env.get(ENV_CREDIT_KEYS)),
    )
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
