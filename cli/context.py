"""What every command receives: the settings, found on the click context."""

from __future__ import annotations

from dataclasses import dataclass

import click

from ledger.settings import Settings


@dataclass
class CliContext:
    settings: Settings


def settings_of(ctx: click.Context) -> Settings:
    obj = ctx.find_object(CliContext)
    if obj is None:  # a subcommand invoked on its own, as in some tests
        from ledger.settings import from_env

        return from_env()
    return obj.settings
