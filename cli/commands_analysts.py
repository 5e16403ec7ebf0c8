"""For analysts: `ledger snapshot` and `ledger export` (docs/analysts.md)."""

from __future__ import annotations

from pathlib import Path

import click

from cli import render
from cli.context import settings_of
from cli.options import as_of_option, summary_json_option, wait_snapshot_option
from projections.times import parse_as_of


@click.command()
@click.option("--out", "out", required=True, metavar="FILE.duckdb",
              type=click.Path(dir_okay=False, path_type=Path),
              help="The snapshot file; written beside it, then renamed over it.")
@click.option("--full", is_flag=True,
              help="Copy every row, even where the previous snapshot at --out could be "
                   "brought up to date with only the rows added since.")
@wait_snapshot_option
@summary_json_option
@click.pass_context
def snapshot(ctx: click.Context, out: Path, full: bool, timeout: float, as_json: bool) -> None:
    """Write a consistent DuckDB snapshot of --store to --out, while its projector runs.

    A Postgres store is read in one REPEATABLE READ transaction. A DuckDB store is read
    here if no process writes it; while a projector writes it, that projector takes the
    snapshot (this command asks it and waits). The snapshot holds the tables, the views
    and the journal positions it reflects; it starts from the previous one at --out where
    that is of the same store (only newer audit rows are copied)."""
    from projections.snapshot_requests import take_snapshot

    settings = settings_of(ctx)
    result = take_snapshot(settings.store, out, full=full, timeout_s=timeout,
                           tuning=settings.tuning)
    render.snapshot(result, as_json)


@click.command("export")
@click.option("--format", "fmt", type=click.Choice(["parquet"]), default="parquet",
              show_default=True, help="File format of the export.")
@click.option("--out", "out", required=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory of the export; an earlier export there is replaced.")
@as_of_option
@wait_snapshot_option
@summary_json_option
@click.pass_context
def export(ctx: click.Context, fmt: str, out: Path, as_of: str | None, timeout: float,
           as_json: bool) -> None:
    """Export --store as Parquet: audit_log by day (hive folders), balances and accounts as
    single files, and manifest.json (positions, row counts, checksums).

    Every file comes from one consistent read of the store (of a DuckDB store whose
    projector runs: from a snapshot that projector takes)."""
    from projections.export import check_export_out, export_parquet
    from projections.snapshot_requests import consistent_reader

    as_of_ms = parse_as_of(as_of) if as_of is not None else None
    out = check_export_out(out)
    settings = settings_of(ctx)
    with consistent_reader(settings.store, out.parent, timeout, settings.tuning) as reader:
        result = export_parquet(reader, out, as_of_ms)
    render.exported(result, fmt, as_of_ms, as_json)


def register(group: click.Group) -> None:
    """Add the analysts' commands to the `ledger` group."""
    group.add_command(snapshot)
    group.add_command(export)
