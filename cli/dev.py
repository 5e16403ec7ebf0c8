"""`ledger dev`: the local stack without Docker (KRaft Kafka and PostgreSQL on loopback).

Errors are not caught here: the root command maps LedgerError to exit codes.
"""

from __future__ import annotations

from pathlib import Path

import click

from ledger.settings import default_home


def _home(ctx: click.Context) -> Path:
    settings = getattr(ctx.obj, "settings", None)
    home = getattr(settings, "home", None)
    return Path(home) if home is not None else default_home()


def _echo(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


@click.group(help="Run a local Kafka (and optionally PostgreSQL) for development, no Docker.")
def dev() -> None:
    pass


@dev.command(
    help="Start the local stack, or whatever part of it is not running (idempotent). "
    "Fetches the Kafka jars with Maven on first use, then starts KRaft brokers on 127.0.0.1 "
    "and prints the connection strings. Makes a random credit key once (credit.key in the "
    "dev home, mode 600) that `ledger serve` uses on this stack when LEDGER_CREDIT_KEY is unset."
)
@click.option(
    "--brokers",
    type=click.Choice(["1", "3"]),
    default="1",
    show_default=True,
    help="1: a single broker on 9092 (replication factor 1). "
    "3: a three-node cluster on 9092-9094 (replication factor 3, min.insync.replicas 2).",
)
@click.option(
    "--postgres",
    is_flag=True,
    help="Also start PostgreSQL on 127.0.0.1:5432 (next free port if taken), "
    "with a database named ledger.",
)
@click.option(
    "--auth",
    is_flag=True,
    help="Require a SCRAM-SHA-256 login (user admin) on every client listener: "
    "SASL_PLAINTEXT on the broker ports and SASL_SSL on 9096 (9096-9098 with 3 brokers; "
    "certificate from a throwaway CA in the dev home); no plaintext listener. "
    "The client settings of each are written to a file (mode 600) for --kafka-config.",
)
@click.pass_context
def up(ctx: click.Context, brokers: str, postgres: bool, auth: bool) -> None:
    import devstack  # here: every other command would load psycopg for nothing

    info = devstack.up(_home(ctx), brokers=int(brokers), postgres=postgres, auth=auth)
    _echo(info.describe())


@dev.command(
    help="Stop the processes this stack started (by their pid files only) and free the ports."
)
@click.option(
    "--wipe",
    is_flag=True,
    help="Also delete the brokers' and PostgreSQL's data (the jar cache is kept).",
)
@click.pass_context
def down(ctx: click.Context, wipe: bool) -> None:
    import devstack

    _echo(devstack.down(_home(ctx), wipe=wipe))


@dev.command(help="Show what runs: each process's pid, port and state, and connection strings.")
@click.pass_context
def status(ctx: click.Context) -> None:
    import devstack

    _echo(devstack.status(_home(ctx)).describe())
