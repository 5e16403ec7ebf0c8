"""The one exit path: results and errors become an ExitCode here, and nowhere else.

A command that ends with a verdict (a rejected command, a failed verification) calls
`finish`; expected errors (LedgerError, click's usage errors, Ctrl-C) become one line
on stderr and their code in `run`; `cli.main.main` hands that code to sys.exit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NoReturn

import click

from ledger.errors import ExitCode, LedgerError


def finish(code: ExitCode) -> NoReturn:
    """End the running command with `code` (its output already printed)."""
    raise click.exceptions.Exit(int(code))


def run(command: click.Command, argv: Sequence[str] | None) -> int:
    """Run the command line; the exit code of its result or of its expected failure."""
    try:
        # With standalone_mode off, click returns ctx.exit()'s code instead of exiting.
        code = command.main(args=argv, standalone_mode=False)
    except LedgerError as e:
        # One line for people and scripts; the rest (a log tail, say) only when asked.
        first, _, rest = str(e).partition("\n")
        click.echo(f"error: {first}", err=True)
        if rest and logging.getLogger().isEnabledFor(logging.INFO):
            click.echo(rest, err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return ExitCode.INTERRUPTED
    except click.exceptions.UsageError as e:
        # One line, like every other expected failure; the help is one flag away.
        message = " ".join(e.format_message().split())
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        click.echo(f"error: {message}{hint}", err=True)
        return e.exit_code
    except click.exceptions.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    return code if isinstance(code, int) else ExitCode.OK
