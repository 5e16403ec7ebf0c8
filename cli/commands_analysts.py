"""For analysts: `ledger snapshot` and `ledger export` (docs/analysts.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.context import settings_of
from cli.options import as_of_option, summary_json_option, wait_snapshot_option
from cli.render import dumps, moment
from projections.times import parse_as_of

if TYPE_CHECKING:  # DuckDB is imported only when a command runs, not when the CLI starts
    from projections.snapshot import SnapshotResult


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

    result = take_snapshot(settings_of(ctx).store, out, full=full, timeout_s=timeout)
    _print_snapshot(result, as_json)


def _print_snapshot(result: SnapshotResult, as_json: bool) -> None:
    if as_json:
        fields = result.as_json()
        fields.pop("taken_at_ms")
        click.echo(dumps({**fields, **moment("taken_at", result.taken_at_ms)}))
        return
    behind = ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(result.positions.items())
                       if t.endswith(".events"))
    how = result.mode + (f" ({result.fallback})" if result.fallback else "")
    click.echo(f"snapshot {result.out}: {how}, {result.audit_rows} audit rows "
               f"({result.rows_added} new), {result.accounts} accounts, "
               f"{result.seconds:.1f}s; reflects {behind or 'no events'}")


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
    with consistent_reader(settings_of(ctx).store, out.parent, timeout) as reader:
        result = export_parquet(reader, out, as_of_ms)
    tables = result.manifest["tables"]
    if as_json:
        click.echo(dumps({"out": result.out, "format": fmt, **moment("as_of", as_of_ms),
                          "rows": {name: t["rows"] for name, t in tables.items()},
                          "files": sum(len(t["files"]) for t in tables.values()),
                          "balance_checksum": result.manifest["balance_checksum"],
                          "seconds": round(result.seconds, 3),
                          "rows_per_s": round(result.rows / max(result.seconds, 1e-9))}))
        return
    counts = ", ".join(f"{t['rows']} {name} rows" for name, t in tables.items())
    click.echo(f"exported {counts} to {result.out} in {result.seconds:.1f}s; balance checksum "
               f"{result.manifest['balance_checksum']}")


def register(group: click.Group) -> None:
    """Add the analysts' commands to the `ledger` group."""
    group.add_command(snapshot)
    group.add_command(export)
