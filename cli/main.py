"""The `ledger` command: global options, subcommands, and the one exit-code mapping."""

from __future__ import annotations

import logging
import sys

import click

from cli.context import CliContext
from cli.logs import configure_logging
from cli.options import log_level_option
from ledger.errors import ExitCode, LedgerError
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
    from cli.commands_topics import topics
    from cli.commands_write import register as register_write
    from cli.dev import dev

    cli.add_command(topics)
    cli.add_command(tail)
    cli.add_command(deadletters)
    cli.add_command(demo)
    register_write(cli)
    register_read(cli)
    register_analysts(cli)
    cli.add_command(dev)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: expected failures become one line on stderr and an exit code."""
    try:
        # With standalone_mode off, click returns ctx.exit()'s code instead of exiting.
        code = cli.main(args=argv, standalone_mode=False)
    except LedgerError as e:
        # One line for people and scripts; the rest (a log tail, say) only when asked.
        first, _, rest = str(e).partition("\n")
        click.echo(f"error: {first}", err=True)
        if rest and logging.getLogger().isEnabledFor(logging.INFO):
            click.echo(rest, err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except click.exceptions.UsageError as e:
        # One line, like every other expected failure; the help is one flag away.
        message = " ".join(e.format_message().split())
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        click.echo(f"error: {message}{hint}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
