"""The `ledger` command: global options and its subcommands; the entry point."""

from __future__ import annotations

import sys

import click

from cli.context import CliContext
from cli.exits import run
from cli.logs import configure_logging
from cli.options import log_level_option
from ledger.settings import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_PREFIX,
    DEFAULT_STORE,
    ENV_BOOTSTRAP,
    ENV_KAFKA_CONFIG,
    ENV_LOG_FORMAT,
    ENV_PARTITIONS,
    ENV_STORE,
    ENV_TOPIC_PREFIX,
    from_env,
    read_kafka_config,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="points-ledger", prog_name="ledger",
                      help="Print the installed version and exit.")
@click.option(
    "--bootstrap",
    envvar=ENV_BOOTSTRAP,
    default=DEFAULT_BOOTSTRAP,
    show_default=True,
    help=f"Kafka bootstrap servers (env {ENV_BOOTSTRAP}).",
)
@click.option(
    "--topic-prefix",
    envvar=ENV_TOPIC_PREFIX,
    default=DEFAULT_PREFIX,
    show_default=True,
    help=f"Prefix of every topic (env {ENV_TOPIC_PREFIX}).",
)
@click.option(
    "--kafka-config",
    envvar=ENV_KAFKA_CONFIG,
    default=None,
    metavar="FILE",
    help=f"Extra Kafka client properties, e.g. SASL or TLS (env {ENV_KAFKA_CONFIG}).",
)
@click.option(
    "--store",
    envvar=ENV_STORE,
    default=DEFAULT_STORE,
    show_default=True,
    help=f"Projection store URL, duckdb:/// or postgresql+psycopg:// (env {ENV_STORE}).",
)
@click.option(
    "--partitions",
    envvar=ENV_PARTITIONS,
    type=click.IntRange(min=1),
    default=6,
    show_default=True,
    help=f"Partitions of each topic when created (env {ENV_PARTITIONS}).",
)
@click.option(
    "--log-format",
    envvar=ENV_LOG_FORMAT,
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text or as JSON objects.",
)
@log_level_option
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.pass_context
def cli(
    ctx: click.Context,
    bootstrap: str,
    topic_prefix: str,
    kafka_config: str | None,
    store: str,
    partitions: int,
    log_format: str,
    log_level: str | None,
    verbose: int,
) -> None:
    """Event-sourced reward points on Kafka: write, project, replay and verify."""
    configure_logging(log_format, verbose, log_level)
    settings = from_env(
        bootstrap=bootstrap,
        topic_prefix=topic_prefix,
        store=store,
        partitions=partitions,
        kafka_extra=read_kafka_config(kafka_config) if kafka_config else None,
        log_format=log_format,
    )
    ctx.obj = CliContext(settings=settings)


def _register() -> None:
    from cli.commands_analysts import register as register_analysts
    from cli.commands_demo import demo
    from cli.commands_journal import deadletters, tail
    from cli.commands_read import register as register_read
    from cli.commands_services import register as register_services
    from cli.commands_topics import topics
    from cli.commands_write import register as register_write
    from cli.dev import dev

    cli.add_command(topics)
    cli.add_command(tail)
    cli.add_command(deadletters)
    cli.add_command(demo)
    register_write(cli)
    register_services(cli)
    register_read(cli)
    register_analysts(cli)
    cli.add_command(dev)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command line and exit with its code (cli.exits)."""
    sys.exit(run(cli, argv))


if __name__ == "__main__":
    main()
