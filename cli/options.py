"""Options shared by several commands, defined once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from cli.logs import DEFAULT_LEVEL, LEVELS
from ledger.client import new_command_id
from ledger.domain import MAX_COMMAND_ID_CHARS, MAX_REASON_CHARS, Actor
from ledger.health import DEFAULT_METRICS_HOST, DEFAULT_READY_MAX_LAG, Endpoint
from ledger.settings import ENV_LOG_LEVEL, Tuning, parse_duration
from ledger.wire import command

F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS = Tuning()  # the defaults options show


def _bounded_text(limit: int, what: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A callback refusing text the processor would refuse, before anything is sent."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            raise click.BadParameter(f"{what} of {len(value)} characters is longer than {limit}")
        return value

    return check


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object per line instead of text."
)
summary_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the summary as one JSON object."
)
command_id_option = click.option(
    "--command-id",
    default=None,
    help="Idempotency key of the command (a UUID is generated if absent).",
    callback=_bounded_text(MAX_COMMAND_ID_CHARS, "command id"),
)
wait_option = click.option(
    "--wait/--no-wait",
    default=False,
    help="Block until the processor's outcome arrives; exit 1 if rejected.",
)


def _timeout(default: float, text: str, least: float = 0.1) -> Callable[[F], F]:
    """A --timeout in seconds: each command waits for something else."""
    return click.option("--timeout", type=click.FloatRange(min=least), default=default,
                        show_default=True, help=text)


timeout_option = _timeout(30.0, "Seconds to wait for the outcome with --wait.")
query_timeout_option = _timeout(300.0, "Seconds the query may run before it is stopped.")
partition_option = click.option(
    "--partition", "partitions", type=click.IntRange(min=0), multiple=True,
    help="Only this partition (repeat for more; default: every partition).",
)
offset_option = click.option(
    "--offset", type=click.IntRange(min=0), default=None,
    help="Start each partition at this offset (past the end: at the end).",
)
max_records_option = click.option(
    "--max-records", type=click.IntRange(min=1), default=None,
    help="Stop after printing this many records.",
)
reset_option = click.option(
    "--reset",
    is_flag=True,
    help="Wipe the store, even one that projects another journal (another topic prefix or "
    "Kafka cluster), and project this journal from offset zero.",
)
reason_option = click.option(
    "--reason",
    default="",
    help=f"Why the points change (kept in the journal and audit log; {MAX_REASON_CHARS} "
    "characters at most).",
    callback=_bounded_text(MAX_REASON_CHARS, "reason"),
)
actor_option = click.option(
    "--actor",
    type=click.Choice(command.ACTORS),
    default="USER",
    show_default=True,
    help="Who causes the change, for the audit log.",
)


@dataclass(frozen=True)
class WriteArgs:
    """What every write command takes besides its own arguments."""

    reason: str
    actor: Actor
    command_id: str  # the given one, or a new UUID
    wait: bool
    timeout: float
    as_json: bool

    def reason_or(self, default: str) -> str:
        return self.reason or default


def write_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add --reason, --actor, --command-id, --wait, --timeout, --json; the command gets
    them as one `args: WriteArgs` keyword."""

    @functools.wraps(f)
    def command(*a: Any, reason: str, actor: str, command_id: str | None, wait: bool,
                timeout: float, as_json: bool, **kw: Any) -> Any:
        args = WriteArgs(reason, Actor(actor), command_id or new_command_id(), wait, timeout,
                         as_json)
        return f(*a, args=args, **kw)

    options = (reason_option, actor_option, command_id_option, wait_option, timeout_option,
               json_option)
    for option in reversed(options):
        command = option(command)
    return command


def endpoint_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add --metrics-port, --metrics-host, --ready-max-lag; the command gets them as one
    `endpoint: Endpoint | None` keyword (None: no metrics server)."""

    @functools.wraps(f)
    def command(*a: Any, metrics_port: int | None, metrics_host: str | None,
                ready_max_lag: int | None, **kw: Any) -> Any:
        if metrics_port is None:
            if metrics_host is not None or ready_max_lag is not None:
                raise click.UsageError("--metrics-host and --ready-max-lag need --metrics-port")
            return f(*a, endpoint=None, **kw)
        endpoint = Endpoint(metrics_port, metrics_host or DEFAULT_METRICS_HOST,
                            DEFAULT_READY_MAX_LAG if ready_max_lag is None else ready_max_lag)
        return f(*a, endpoint=endpoint, **kw)

    options = (
        click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
                     help="Serve /metrics (Prometheus), /healthz and /readyz on this port "
                     "(docs/operations.md)."),
        click.option("--metrics-host", default=None, metavar="ADDRESS",
                     help=f"Address the metrics server binds [default: {DEFAULT_METRICS_HOST}; "
                     "0.0.0.0 for every interface, e.g. in a container]."),
        click.option("--ready-max-lag", type=click.IntRange(min=0), default=None,
                     metavar="RECORDS",
                     help="Most records any input partition may be behind for /readyz to say "
                     f"ready [default: {DEFAULT_READY_MAX_LAG}]."),
    )
    for option in reversed(options):
        command = option(command)
    return command


log_level_option = click.option(
    "--log-level",
    envvar=ENV_LOG_LEVEL,
    type=click.Choice(LEVELS, case_sensitive=False),
    default=None,
    help=f"Least severe log lines shown (env {ENV_LOG_LEVEL}) [default: {DEFAULT_LEVEL}; up "
    "to WARNING the start and stop lines of serve and project show too]; -v, -vv lower it.",
)


as_of_option = click.option(
    "--as-of", "as_of", metavar="TIME",
    help="Only events that occurred at or before TIME (ISO-8601, UTC if no zone; or epoch ms).",
)
wait_snapshot_option = _timeout(
    DEFAULTS.snapshot_wait_s,
    "Seconds to wait for a DuckDB store's running projector to take the snapshot.", least=1)


def snapshot_schedule_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add --snapshot-every and --snapshot-out; the command gets them as one
    `snapshot_schedule: tuple[float, Path] | None` keyword (seconds, file)."""

    @functools.wraps(f)
    def command(*a: Any, snapshot_every: str | None, snapshot_out: Path | None,
                **kw: Any) -> Any:
        if (snapshot_every is None) != (snapshot_out is None):
            raise click.UsageError("--snapshot-every and --snapshot-out go together")
        schedule = None
        if snapshot_every is not None and snapshot_out is not None:
            schedule = (parse_duration(snapshot_every, "--snapshot-every"), snapshot_out)
        return f(*a, snapshot_schedule=schedule, **kw)

    options = (
        click.option("--snapshot-every", metavar="DURATION", default=None,
                     help="Write a snapshot of the store to --snapshot-out this often (e.g. "
                     "60s, 15m, 1h), on a thread beside the projector's loop."),
        click.option("--snapshot-out", metavar="FILE.duckdb", default=None,
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="Where --snapshot-every writes (as `ledger snapshot --out`)."),
    )
    for option in reversed(options):
        command = option(command)
    return command
