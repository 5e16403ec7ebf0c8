"""The services: `ledger serve` (the command processor) and `ledger project` (a projector),
each running until SIGTERM or Ctrl-C."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import click

from cli import render
from cli.context import settings_of
from cli.options import (
    DEFAULTS,
    endpoint_options,
    reset_option,
    snapshot_schedule_options,
    summary_json_option,
)
from cli.process import stop_on_sigterm, stop_service_on_signals
from ledger.health import Endpoint
from ledger.wiring import build_processor
from projections.factory import open_store
from projections.tasks import projector_for, reach_journal, run_projector


@click.command("serve")
@click.option(
    "--instance-id",
    default=None,
    help="Stable id of this instance (its transactional id); default: host name.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(1, 100_000),
    default=2000,
    show_default=True,
    help="Most commands decided in one Kafka transaction.",
)
@endpoint_options
@click.pass_context
def serve(
    ctx: click.Context, instance_id: str | None, max_batch: int, endpoint: Endpoint | None
) -> None:
    """Run the command processor until SIGTERM or Ctrl-C.

    Needs LEDGER_CREDIT_KEY, the secret every processor signs routed join credits with
    (LEDGER_CREDIT_KEYS: other keys still accepted during a rotation); on the local dev
    stack the key `ledger dev up` made is used. Without one it refuses to start (exit 2).
    """
    processor = build_processor(  # refuses here, before any connection, without a key
        settings_of(ctx),
        instance_id or socket.gethostname(),
        max_batch=max_batch,
        endpoint=endpoint,
    )
    stop_service_on_signals(processor.stop)
    processor.run()


@click.command()
@click.option("--until-caught-up", is_flag=True,
              help="Stop once every assigned partition reached the end offsets taken at start.")
@click.option("--batch-records", type=click.IntRange(min=1),
              default=DEFAULTS.project_batch_records, show_default=True,
              help="Most records per store transaction.")
@click.option("--batch-ms", type=click.IntRange(min=1), default=DEFAULTS.project_batch_ms,
              show_default=True,
              help="Longest time a batch collects records before it is written.")
@reset_option
@endpoint_options
@snapshot_schedule_options
@summary_json_option
@click.pass_context
def project(ctx: click.Context, until_caught_up: bool, batch_records: int,
            batch_ms: int, reset: bool, endpoint: Endpoint | None,
            snapshot_schedule: tuple[float, Path] | None, as_json: bool) -> None:
    """Project accounts and journal events into --store; resumes at the stored positions.

    Several projectors against one Postgres store share the partitions. A store projects
    one journal: another is refused (exit 2) unless --reset. A projector of a DuckDB store
    also takes the snapshots `ledger snapshot` asks it for."""
    settings = settings_of(ctx)
    journal = reach_journal(settings)
    started = time.monotonic()
    with open_store(settings.store) as store:
        projector = projector_for(settings, store, journal, reset=reset,
                                  until_caught_up=until_caught_up, batch_records=batch_records,
                                  batch_ms=batch_ms, snapshot_schedule=snapshot_schedule)
        with stop_on_sigterm(projector.stop):
            stats = run_projector(projector, endpoint)
    render.projected(stats, time.monotonic() - started, store.url, as_json)


def register(group: click.Group) -> None:
    """Add the services to the `ledger` group."""
    for command in (serve, project):
        group.add_command(command)
