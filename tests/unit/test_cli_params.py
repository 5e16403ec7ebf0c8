"""The CLI's parameter types: amounts and accounts refused before anything is sent."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from cli.context import CliContext
from cli.params import Account, Amount
from ledger.settings import Settings


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("amount", type=Amount())
@click.option("--grant", type=Amount("grant", zero_ok=True), default="0")
@click.option("--user", type=Account("user", bare="user"), default="user:a")
@click.option("--account", type=Account("user", "room"), default="room:r")
def probe(amount: int, grant: int, user: str, account: str) -> None:
    click.echo(f"{amount} {grant} {user} {account}")


def run(*args: str, max_amount: int = 1000) -> click.testing.Result:
    return CliRunner().invoke(probe, list(args), obj=CliContext(Settings(max_amount=max_amount)))


def test_valid_values_are_converted() -> None:
    result = run(" 7 ", "--user", "bob", "--account", "USER:x_1")
    assert result.exit_code == 0, result.output
    assert result.output == "7 0 user:bob user:x_1\n"


@pytest.mark.parametrize("text", ["0", "-5", "+5", "1.5", "1e3", "ten", "", "²"])
def test_amount_must_be_a_positive_integer(text: str) -> None:
    result = run(text)
    assert result.exit_code == 2
    assert "amount must be a positive integer" in result.output


def test_amount_above_the_settings_maximum() -> None:
    result = run("1001")
    assert result.exit_code == 2
    assert "amount 1001 is above the maximum of 1000" in result.output
    assert run("1000").exit_code == 0


def test_grant_may_be_zero_but_not_negative() -> None:
    assert run("5", "--grant", "0").exit_code == 0
    result = run("5", "--grant", "-3")
    assert result.exit_code == 2 and "grant must be a positive integer" in result.output


@pytest.mark.parametrize(("args", "expected"), [
    (["--user", "room:r"], "must be a user:<id> account"),
    (["--account", "system:rewards"], "must be a user:<id> or room:<id> account"),
    (["--account", "alice"], "bad account"),
    (["--account", "user:" + "a" * 65], "bad account"),
    (["--user", "bad id!"], "bad account"),
])
def test_accounts_follow_the_domain_rules(args: list[str], expected: str) -> None:
    result = run("5", *args)
    assert result.exit_code == 2
    assert expected in result.output
