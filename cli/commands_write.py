"""Write commands: `account open`, `earn`, `spend`, `join` and `reverse`."""

from __future__ import annotations

from typing import Any

import click

from cli import render
from cli.context import settings_of
from cli.exits import finish
from cli.options import WriteArgs, write_options
from cli.params import Account, Amount
from ledger.domain import Command, Earn, Join, OpenAccount, Spend
from ledger.errors import ExitCode, WaitTimeoutError
from ledger.records import ReverseRef
from ledger.tasks import reversal, send_command

USER_OR_ROOM = Account("user", "room")


def submit(ctx: click.Context, command: Command, args: WriteArgs,
           ref: ReverseRef | None = None) -> None:
    """Send one command; print its id, or its outcome with --wait (exit 1 if rejected)."""
    try:
        outcome = send_command(settings_of(ctx), command, ref, wait=args.wait,
                               timeout=args.timeout)
    except WaitTimeoutError:
        # Sent and acknowledged, outcome unknown (exit 4): the error names the id to ask.
        if args.as_json:
            render.unknown_outcome(command.command_id)
        raise
    if outcome is None:
        render.submitted(command.command_id, args.as_json)
        return
    render.outcome(outcome, args.as_json)
    if not outcome.accepted:
        finish(ExitCode.REJECTED)


@click.group()
def account() -> None:
    """Manage point accounts."""


@account.command("open")
@click.argument("account_id", metavar="ACCOUNT", type=USER_OR_ROOM)
@click.option(
    "--floor", type=int, default=0, show_default=True, help="Lowest balance the account may reach."
)
@click.option("--grant", type=Amount("grant", zero_ok=True), default="0", show_default=True,
              help="Opening grant of points.")
@write_options
@click.pass_context
def account_open(ctx: click.Context, account_id: str, floor: int, grant: int,
                 args: WriteArgs) -> None:
    """Open a user or room account, e.g. user:alice or room:math."""
    cmd = OpenAccount(command_id=args.command_id, actor=args.actor,
                      reason=args.reason_or("account opened"), account=account_id, floor=floor,
                      grant=grant)
    submit(ctx, cmd, args)


def _earn_or_spend(kind: type[Earn] | type[Spend]) -> Any:
    @click.argument("account_id", metavar="ACCOUNT", type=USER_OR_ROOM)
    @click.argument("amount", metavar="N", type=Amount())
    @write_options
    @click.pass_context
    def command(ctx: click.Context, account_id: str, amount: int, args: WriteArgs) -> None:
        cmd = kind(command_id=args.command_id, actor=args.actor, reason=args.reason,
                   account=account_id, amount=amount)
        submit(ctx, cmd, args)

    return command


# ignore_unknown_options lets "-5" reach the amount check and its clear message.
_NUMERIC_ARGS = {"ignore_unknown_options": True}
earn = click.command(
    "earn", context_settings=_NUMERIC_ARGS, help="Grant N points to ACCOUNT (system:rewards pays)."
)(_earn_or_spend(Earn))
spend = click.command(
    "spend", context_settings=_NUMERIC_ARGS, help="Charge N points from ACCOUNT (not below floor)."
)(_earn_or_spend(Spend))


@click.command("join")
@click.option("--user", "user", required=True, type=Account("user", bare="user"),
              help="The joining user (id or user:<id>).")
@click.option("--room", "room", required=True, type=Account("room", bare="room"),
              help="The room joined (id or room:<id>).")
@click.option("--fee", required=True, type=Amount("fee"), help="Points the user pays the room.")
@write_options
@click.pass_context
def join(ctx: click.Context, user: str, room: str, fee: int, args: WriteArgs) -> None:
    """A user pays a room's fee: one journal event with both postings."""
    cmd = Join(command_id=args.command_id, actor=args.actor,
               reason=args.reason_or("joined room"), user=user, room=room, fee=fee)
    submit(ctx, cmd, args)


@click.command("reverse")
@click.argument("event_id")
@write_options
@click.pass_context
def reverse(ctx: click.Context, event_id: str, args: WriteArgs) -> None:
    """Reverse a journal event with a compensating event (the original stays)."""
    cmd, ref = reversal(settings_of(ctx), event_id, command_id=args.command_id,
                        actor=args.actor, reason=args.reason)
    submit(ctx, cmd, args, ref=ref)


def register(group: click.Group) -> None:
    """Add the write commands to the `ledger` group."""
    for command in (account, earn, spend, join, reverse):
        group.add_command(command)
