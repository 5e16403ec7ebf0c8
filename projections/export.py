"""`ledger export --format parquet`: the store as Parquet files any tool loads.

    DIR/audit_log/day=YYYY-MM-DD/part-N.parquet   one row per posting, by UTC day (hive)
    DIR/balances.parquet                          one row per account with postings
    DIR/accounts.parquet                          one row per opened account
    DIR/manifest.json                             positions, row counts, checksums

Everything is read in one transaction of the store (projections.snapshot_source), so
the files agree with each other and with the positions in the manifest. With --as-of,
audit_log holds the postings that occurred at or before that time, balances are their
sums (computed where the rows are) and accounts those opened by then (with the state
they have now: accounts keep no history). The export is written to a temporary
directory beside DIR and then takes DIR's place; a DIR holding anything but an earlier
export is refused. Timestamps are UTC without a zone, as in the stores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ledger.errors import UsageError
from projections.checksum import balance_checksum
from projections.snapshot_source import StoreReader, columns
from projections.store import (
    ACCOUNT_SCHEMA,
    AUDIT_SCHEMA,
    BALANCE_SCHEMA,
    META_JOURNAL_CLUSTER,
    META_JOURNAL_PREFIX,
    META_STORE_ID,
)
from projections.times import iso_ms

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
EXPORT_AUDIT_SCHEMA = AUDIT_SCHEMA.append(pa.field("day", pa.date32()))
ROWS_PER_GROUP = 128 * 1024
ROWS_PER_FILE = 4 * 1024 * 1024
OPEN_DAYS = 16
BALANCES_AS_OF = """SELECT account, CAST(sum(amount) AS BIGINT) AS balance,
    upper(split_part(account, ':', 1)) AS type, count(*) AS postings,
    max(occurred_at) AS updated_at
    FROM audit_log {where} GROUP BY account"""


@dataclass
class ExportResult:
    out: str
    manifest: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(int(t["rows"]) for t in self.manifest["tables"].values())


def check_export_out(out: Path) -> Path:
    """DIR, absolute; refused if it holds anything but an earlier export."""
    out = out.resolve()
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: no directory {out.parent}")
    if out.exists() and (not out.is_dir()
                         or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise UsageError(f"--out {out} exists and is not an earlier export; remove it or "
                         "choose another --out")
    return out


def timestamp_sql(ms: int) -> str:
    """A TIMESTAMP literal both stores read (UTC, millisecond precision)."""
    return f"TIMESTAMP '{iso_ms(ms)[:-1].replace('T', ' ')}'"


def export_parquet(reader: StoreReader, out: Path, as_of_ms: int | None = None) -> ExportResult:
    """Write the export of what reader sees to out (see the module's docstring)."""
    started = time.monotonic()
    out = check_export_out(out)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        positions, meta = reader.positions(), reader.meta()
        upto = f"WHERE occurred_at <= {timestamp_sql(as_of_ms)}" if as_of_ms is not None else ""
        tables = {"audit_log": _write_audit(reader, tmp, upto)}
        if as_of_ms is None:
            balances = reader.table("balances").read_all()
            accounts = reader.table("accounts").read_all()
        else:
            balances = reader.read(BALANCES_AS_OF.format(where=upto), BALANCE_SCHEMA).read_all()
            accounts = reader.table("accounts", f"WHERE opened_at <= {timestamp_sql(as_of_ms)}"
                                    ).read_all()
        tables["balances"] = _write_table(balances, tmp, "balances.parquet")
        tables["accounts"] = _write_table(accounts, tmp, "accounts.parquet")
        manifest = {
            "format": "parquet", "version": FORMAT_VERSION,
            "created_at": iso_ms(int(time.time() * 1000)),
            "read_at": iso_ms(reader.started_ms),
            "as_of": iso_ms(as_of_ms) if as_of_ms is not None else None,
            "as_of_ms": as_of_ms, "source": reader.url,
            "store_id": meta.get(META_STORE_ID),
            "journal": {"prefix": meta.get(META_JOURNAL_PREFIX),
                        "cluster_id": meta.get(META_JOURNAL_CLUSTER)},
            "positions": [{"topic": t, "partition": p, "next_offset": o}
                          for (t, p), o in sorted(positions.items())],
            "tables": tables,
            "balance_checksum": balance_checksum(zip(
                balances.column("account").to_pylist(), balances.column("balance").to_pylist(),
                strict=True)),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(str(out), manifest, time.monotonic() - started)


class _DayFiles:
    """audit_log/day=YYYY-MM-DD/part-N.parquet, hive style (the day lives in the path).

    Written with one ParquetWriter per open day, not pyarrow.dataset.write_dataset, whose
    queues held ~500 MB more at the peak of a 1M-event export here. Rows come roughly in
    time order, so few days are open at once; the least recently used closes past
    OPEN_DAYS (that day's next rows go to a new part)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.schema = AUDIT_SCHEMA
        self.open: dict[str, tuple[pq.ParquetWriter, Path, list[int]]] = {}
        self.parts: dict[str, int] = {}
        self.files: list[tuple[Path, int]] = []

    def write(self, batch: pa.RecordBatch) -> None:
        days = batch.column("day")
        rows = batch.select(self.schema.names)
        for day in pc.unique(days).to_pylist():
            self._writer(day.isoformat(), rows.filter(pc.equal(days, day)))

    def _writer(self, day: str, rows: pa.RecordBatch) -> None:
        if day in self.open and self.open[day][2][0] + rows.num_rows > ROWS_PER_FILE:
            self._close(day)
        if day not in self.open:
            if len(self.open) >= OPEN_DAYS:
                self._close(next(iter(self.open)))
            folder = self.root / f"day={day}"
            folder.mkdir(parents=True, exist_ok=True)
            part = self.parts.get(day, 0)
            self.parts[day] = part + 1
            path = folder / f"part-{part}.parquet"
            self.open[day] = (pq.ParquetWriter(path, self.schema, compression="zstd"), path, [0])
        writer, path, count = self.open.pop(day)
        self.open[day] = (writer, path, count)  # now the most recently used
        writer.write_batch(rows, row_group_size=ROWS_PER_GROUP)
        count[0] += rows.num_rows

    def _close(self, day: str) -> None:
        writer, path, count = self.open.pop(day)
        writer.close()
        self.files.append((path, count[0]))

    def close(self) -> None:
        for day in list(self.open):
            self._close(day)


def _write_audit(reader: StoreReader, tmp: Path, where: str) -> dict[str, Any]:
    sql = (f"SELECT {columns(AUDIT_SCHEMA)}, CAST(occurred_at AS DATE) AS day "
           f"FROM audit_log {where}")
    days = _DayFiles(tmp / "audit_log")
    (tmp / "audit_log").mkdir()
    try:
        for batch in reader.read(sql, EXPORT_AUDIT_SCHEMA):
            days.write(batch)
    finally:
        days.close()
    files = sorted((_describe(path, tmp, rows) for path, rows in days.files),
                   key=lambda f: f["path"])
    return {"path": "audit_log", "partitioning": "hive", "partition_column": "day",
            "rows": sum(f["rows"] for f in files), "files": files}


def _write_table(table: pa.Table, tmp: Path, name: str) -> dict[str, Any]:
    schema = BALANCE_SCHEMA if name.startswith("balances") else ACCOUNT_SCHEMA
    pq.write_table(table.cast(schema), tmp / name, compression="zstd")
    return {"path": name, "rows": table.num_rows,
            "files": [_describe(tmp / name, tmp, table.num_rows)]}


def _describe(path: Path, root: Path, rows: int) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return {"path": str(path.relative_to(root)), "rows": rows, "bytes": path.stat().st_size,
            "sha256": digest.hexdigest()}


def _replace(tmp: Path, out: Path) -> None:
    """tmp takes out's place (an earlier export there is removed after)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def verify_export(out: Path) -> list[str]:
    """What does not match the manifest (checksums, row counts); empty if all does."""
    manifest = json.loads((out / MANIFEST).read_text())
    problems = []
    for name, table in manifest["tables"].items():
        for f in table["files"]:
            got = _describe(out / f["path"], out, f["rows"])
            if got["sha256"] != f["sha256"]:
                problems.append(f"{name}: {f['path']} differs from the manifest")
            elif pq.ParquetFile(out / f["path"]).metadata.num_rows != f["rows"]:
                problems.append(f"{name}: {f['path']} does not hold {f['rows']} rows")
    return problems
