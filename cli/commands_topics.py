"""`ledger topics create|describe`."""

from __future__ import annotations

import json

import click

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
    keys = ("cleanup.policy", "retention.ms", "retention.bytes", "min.insync.replicas")
    for s in describe_topics(settings):
        shown = {k: s.configs.get(k) for k in keys}
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "topic": s.name,
                        "partitions": s.partitions,
                        "replication_factor": s.replication_factor,
                        "configs": shown,
                    }
                )
            )
        else:
            conf = " ".join(f"{k}={v}" for k, v in shown.items())
            click.echo(f"{s.name:<24} partitions={s.partitions} rf={s.replication_factor} {conf}")
    guard_topics(settings)
