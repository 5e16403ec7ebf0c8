"""`ledger topics create|describe`."""

from __future__ import annotations

import click

from cli import render
from cli.context import settings_of
from cli.options import json_option
from ledger.topics import create_topics, describe_topics, guard_topics


@click.group()
def topics() -> None:
    """Create and describe the ledger's topics."""


@topics.command("create")
@click.pass_context
def create(ctx: click.Context) -> None:
    """Create every topic with its configs (idempotent), then check them."""
    settings = settings_of(ctx)
    created = create_topics(settings)
    for name in created:
        click.echo(f"created {name}")
    click.echo(f"{len(created)} created, all {settings.topic_prefix}.* topics present and safe")


@topics.command("describe")
@json_option
@click.pass_context
def describe(ctx: click.Context, as_json: bool) -> None:
    """Show partitions, replication and the configs that matter of every topic."""
    settings = settings_of(ctx)
    for spec in describe_topics(settings):
        render.topic(spec, as_json)
    guard_topics(settings)
