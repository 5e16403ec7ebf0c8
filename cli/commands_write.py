"""Write commands (`account open`, `earn`, `spend`, `join`, `reverse`) and `serve`, `tail`."""

from __future__ import annotations

import faulthandler
import json
import logging
import signal
import socket
from typing import Any

import click

from cli.context import settings_of
from cli.options import WriteArgs, endpoint_options, write_options
from ledger.domain import Command, Earn, Join, OpenAccount, Reverse, Spend, parse_account
from ledger.errors import InfrastructureError, RejectedError, UsageError, WaitTimeoutError
from ledger.health import Endpoint
from ledger.records import Outcome, ReverseRef
from ledger.wiring import build_client, build_processor

log = logging.getLogger("ledger.cli")


def _amount(value: str, name: str = "amount") -> int:
    """A positive integer, strictly: 1.5, 1e3, -3, 0 and 'ten' are usage errors."""
    text = value.strip()
    if not text.isdigit():
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    number = int(text)
    if number <= 0:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return number


def _bounded(ctx: click.Context, value: str, name: str = "amount") -> int:
    number = _amount(value, name)
    maximum = settings_of(ctx).max_amount
    if number > maximum:
        raise UsageError(f"{name} {number} is above the maximum of {maximum}")
    return number


def _account(text: str, *kinds: str) -> str:
    account = parse_account(text)
    if kinds and account.split(":", 1)[0] not in kinds:
        raise UsageError(f"{text!r} must be a {' or '.join(k + ':<id>' for k in kinds)} account")
    return account


def _with_prefix(text: str, kind: str) -> str:
    return text if ":" in text else f"{kind}:{text}"


def submit(ctx: click.Context, command: Command, args: WriteArgs,
           ref: ReverseRef | None = None) -> None:
    """Send one command; print its id, or its outcome with --wait (exit 1 if rejected)."""
    wait, timeout, as_json = args.wait, args.timeout, args.as_json
    client = build_client(settings_of(ctx))
    try:
        if not wait:
            client.submit(command, ref)
            client.flush(timeout)
            _print(
                as_json,
                {"command_id": command.command_id, "status": "submitted"},
                f"submitted {command.command_id}",
            )
            return
        outcome = client.send(command, ref, timeout)
    except WaitTimeoutError as e:
        # Sent and acknowledged, outcome unknown (exit 4): name the command to ask about.
        if as_json:
            click.echo(json.dumps({"command_id": command.command_id, "status": "unknown"}))
        raise WaitTimeoutError(
            f"{e}; to learn its outcome send it again with --command-id {command.command_id} "
            "--wait (a retry gets the first outcome, never a second event)") from None
    except InfrastructureError as e:
        # Not acknowledged by Kafka (brokers down, no quorum): say how to finish the job.
        raise InfrastructureError(
            f"{e}; command {command.command_id} may not be recorded: send it again with "
            f"--command-id {command.command_id} (one id is never applied twice)"
        ) from e
    finally:
        client.close()
    _print_outcome(outcome, as_json)
    if not outcome.accepted:
        raise click.exceptions.Exit(RejectedError.exit_code)


def _print_outcome(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(outcome.to_json()))
    elif outcome.accepted:
        click.echo(f"accepted {outcome.command_id} events {' '.join(outcome.event_ids) or '-'}")
    else:
        click.echo(f"rejected {outcome.command_id}: {outcome.reason}: {outcome.detail}")


def _print(as_json: bool, obj: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(obj) if as_json else text)


@click.group()
def account() -> None:
    """Manage point accounts."""


@account.command("open")
@click.argument("account_id", metavar="ACCOUNT")
@click.option(
    "--floor", type=int, default=0, show_default=True, help="Lowest balance the account may reach."
)
@click.option("--grant", default="0", show_default=True, help="Opening grant of points.")
@write_options
@click.pass_context
def account_open(ctx: click.Context, account_id: str, floor: int, grant: str,
                 args: WriteArgs) -> None:
    """Open a user or room account, e.g. user:alice or room:math."""
    grant_n = 0 if grant.strip() == "0" else _bounded(ctx, grant, "grant")
    cmd = OpenAccount(command_id=args.command_id, actor=args.actor,
                      reason=args.reason_or("account opened"),
                      account=_account(account_id, "user", "room"), floor=floor, grant=grant_n)
    submit(ctx, cmd, args)


def _earn_or_spend(kind: type[Earn] | type[Spend]) -> Any:
    @click.argument("account_id", metavar="ACCOUNT")
    @click.argument("amount", metavar="N")
    @write_options
    @click.pass_context
    def command(ctx: click.Context, account_id: str, amount: str, args: WriteArgs) -> None:
        cmd = kind(command_id=args.command_id, actor=args.actor, reason=args.reason,
                   account=_account(account_id, "user", "room"), amount=_bounded(ctx, amount))
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
@click.option("--user", "user", required=True, help="The joining user (id or user:<id>).")
@click.option("--room", "room", required=True, help="The room joined (id or room:<id>).")
@click.option("--fee", required=True, help="Points the user pays the room.")
@write_options
@click.pass_context
def join(ctx: click.Context, user: str, room: str, fee: str, args: WriteArgs) -> None:
    """A user pays a room's fee: one journal event with both postings."""
    cmd = Join(command_id=args.command_id, actor=args.actor,
               reason=args.reason_or("joined room"),
               user=_account(_with_prefix(user, "user"), "user"),
               room=_account(_with_prefix(room, "room"), "room"), fee=_bounded(ctx, fee, "fee"))
    submit(ctx, cmd, args)


@click.command("reverse")
@click.argument("event_id")
@write_options
@click.pass_context
def reverse(ctx: click.Context, event_id: str, args: WriteArgs) -> None:
    """Reverse a journal event with a compensating event (the original stays)."""
    from ledger.journal import find_event

    found = find_event(settings_of(ctx), event_id)
    assert found.entry is not None  # find_event only returns decoded events
    cmd = Reverse(command_id=args.command_id, actor=args.actor,
                  reason=args.reason_or(f"reversal of {event_id}"), event_id=event_id,
                  original=found.entry.postings)
    submit(ctx, cmd, args, ref=found.ref)


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

    def _stop(signum: int, _frame: object) -> None:
        log.warning("signal %d: finishing the open batch, then stopping", signum)
        processor.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck service waits on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    processor.run()


def register(group: click.Group) -> None:
    for command in (account, earn, spend, join, reverse, serve):
        group.add_command(command)
