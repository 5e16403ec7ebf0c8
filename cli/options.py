"""Options shared by several commands, defined once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object per line instead of text."
)
command_id_option = click.option(
    "--command-id",
    default=None,
    help="Idempotency key of the command (a UUID is generated if absent).",
)
wait_option = click.option(
    "--wait/--no-wait",
    default=False,
    help="Block until the processor's outcome arrives; exit 1 if rejected.",
)
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the outcome with --wait.",
)
reason_option = click.option(
    "--reason", default="", help="Why the points change (kept in the journal and audit log)."
)
actor_option = click.option(
    "--actor",
    type=click.Choice(["SYSTEM", "USER", "ADMIN"]),
    default="USER",
    show_default=True,
    help="Who causes the change, for the audit log.",
)


def write_options(f: F) -> F:
    """The options every write command takes."""
    for option in reversed((command_id_option, wait_option, timeout_option, json_option)):
        f = option(f)
    return f
