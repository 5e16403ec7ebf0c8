"""Every command and every option of the CLI has help text; the contract's commands exist."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from cli.main import cli

CONTRACT = [
    "dev up",
    "dev down",
    "dev status",
    "topics create",
    "topics describe",
    "serve",
    "account open",
    "earn",
    "spend",
    "join",
    "reverse",
    "project",
    "replay",
    "verify",
    "balance",
    "history",
    "tail",
    "deadletters",
    "query",
    "snapshot",
    "export",
    "demo",
]


def walk(group: click.Command, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    yield prefix.strip(), group
    if isinstance(group, click.Group):
        for name, sub in group.commands.items():
            yield from walk(sub, f"{prefix} {name}")


COMMANDS = dict(walk(cli))


@pytest.mark.parametrize("path", CONTRACT)
def test_contract_command_exists(path: str) -> None:
    assert path in COMMANDS


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_command_and_options_have_help(path: str) -> None:
    command = COMMANDS[path]
    assert (command.help or command.short_help or "").strip(), f"`{path}` has no help"
    for param in command.params:
        if isinstance(param, click.Option):
            assert (param.help or "").strip(), f"`{path}` option {param.opts} has no help"


def test_help_runs_for_every_command() -> None:
    from click.testing import CliRunner

    runner = CliRunner()
    for path in COMMANDS:
        result = runner.invoke(cli, [*path.split(), "--help"] if path else ["--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
