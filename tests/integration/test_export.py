"""`ledger export --format parquet`: the exported audit rows fold back to the exported
balances and to the journal's; DuckDB and pyarrow read the files (pandas too, where it
is installed); the manifest tells positions, row counts and checksums."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ledger.errors import UsageError
from ledger.settings import Settings
from projections.export import export_parquet, verify_export
from projections.factory import open_store
from projections.snapshot_source import open_reader
from tests import views_fold as fold
from tests.integration.journal_factory import (
    JournalWriter,
    expected_balances,
    ledger_argv,
    make_journal,
)
from tests.integration.test_snapshot import projector, until

pytestmark = pytest.mark.integration
EVENTS = fold.demo_like_events(500, seed=12)


@pytest.fixture
def filled(store_url: str) -> str:
    """A store of each kind (conftest's store_url) holding EVENTS."""
    with open_store(store_url) as store:
        fold.fill_store(store, EVENTS)
    return store_url


def export(url: str, out: Path, as_of: int | None = None) -> dict[str, Any]:
    with open_reader(url) as reader:
        return export_parquet(reader, out, as_of).manifest


def fold_audit(rows: list[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for account, amount in rows:
        out[account] += amount
    return dict(out)


def read_with_duckdb(out: Path) -> tuple[dict[str, int], dict[str, int], int]:
    """(audit rows folded, balances.parquet, distinct days) as DuckDB reads the files."""
    con = duckdb.connect()
    audit = con.execute("SELECT account, amount, day FROM read_parquet(?, hive_partitioning "
                        "= true)", [str(out / "audit_log" / "**" / "*.parquet")]).fetchall()
    balances = dict(con.execute("SELECT account, balance FROM read_parquet(?)",
                                [str(out / "balances.parquet")]).fetchall())
    return fold_audit([(a, n) for a, n, _ in audit]), balances, len({d for *_, d in audit})


def read_with_pyarrow(out: Path) -> tuple[dict[str, int], dict[str, int]]:
    audit = ds.dataset(out / "audit_log", format="parquet", partitioning="hive").to_table(
        columns=["account", "amount"])
    balances = pq.read_table(out / "balances.parquet")
    return (fold_audit(list(zip(audit.column("account").to_pylist(),
                                audit.column("amount").to_pylist(), strict=True))),
            dict(zip(balances.column("account").to_pylist(),
                     balances.column("balance").to_pylist(), strict=True)))


def test_exported_audit_rows_fold_back_to_the_exported_balances(filled: str,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "export"
    manifest = export(filled, out)
    want = expected_balances(EVENTS)
    audit, balances, days = read_with_duckdb(out)
    assert audit == balances == want
    assert read_with_pyarrow(out) == (want, want)
    assert days == len({fold.day_of(e["occurred_at"]) for e in EVENTS}) > 1
    folders = {p.name for p in (out / "audit_log").iterdir()}
    assert folders == {f"day={fold.day_of(e['occurred_at'])}" for e in EVENTS}
    tables = manifest["tables"]
    assert tables["audit_log"]["rows"] == sum(len(e["postings"]) for e in EVENTS)
    assert tables["balances"]["rows"] == len(want)
    assert tables["accounts"]["rows"] == len({p["account"] for e in EVENTS
                                              for p in e["postings"]
                                              if not p["account"].startswith("system:")})
    with open_store(filled) as store:
        positions = store.positions()
        assert manifest["balance_checksum"] == store.balance_checksum()
    assert {(p["topic"], p["partition"]): p["next_offset"]
            for p in manifest["positions"]} == positions
    assert verify_export(out) == []
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_as_of_exports_the_rows_balances_and_accounts_of_that_moment(
        filled: str, tmp_path: Path) -> None:
    moment = EVENTS[len(EVENTS) // 2]["occurred_at"]
    out = tmp_path / "then"
    manifest = export(filled, out, as_of=moment)
    audit, balances, _ = read_with_duckdb(out)
    assert audit == balances == expected_balances(EVENTS, as_of=moment)
    assert manifest["as_of_ms"] == moment
    opened = pq.read_table(out / "accounts.parquet").column("opened_at").to_pylist()
    assert opened and all(fold.as_ms(t) <= moment for t in opened)


def test_pandas_reads_the_export(filled: str, tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    out = tmp_path / "export"
    export(filled, out)
    audit = pandas.read_parquet(out / "audit_log")
    balances = pandas.read_parquet(out / "balances.parquet")
    assert audit.groupby("account")["amount"].sum().to_dict() == dict(
        zip(balances["account"], balances["balance"], strict=True))


def test_an_export_replaces_an_earlier_one_and_nothing_else(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'store.duckdb'}"
    with open_store(url) as store:
        fold.fill_store(store, EVENTS[:100])
    out = tmp_path / "export"
    export(url, out)
    with open_store(url) as store:
        fold.fill_store(store, EVENTS, start=100)
    export(url, out)
    assert read_with_duckdb(out)[0] == expected_balances(EVENTS)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_text("meow")
    with pytest.raises(UsageError, match="not an earlier export"):
        export(url, other)
    assert (other / "cat.jpg").read_text() == "meow"


def test_export_of_a_duckdb_store_while_its_projector_runs(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(partitions=2)
    journal = make_journal(600, seed=31)
    out = tmp_path / "export"
    rows = sum(len(e["postings"]) for e in journal.events)

    def exported() -> dict[str, Any] | None:
        done = subprocess.run(ledger_argv(settings, settings.store, "export", "--format",
                                          "parquet", "--out", str(out), "--json"),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result if result["rows"]["audit_log"] == rows else None

    with JournalWriter(settings) as writer, \
            projector(settings, settings.store, tmp_path / "project.log"):
        writer.write_journal(journal, txn_size=100)
        result = until(exported)
    assert read_with_duckdb(out)[:2] == (journal.balances(), journal.balances())
    assert result["balance_checksum"] == json.loads(
        (out / "manifest.json").read_text())["balance_checksum"]
    assert not list(tmp_path.glob(".ledger-read-*"))  # the projector's snapshot is gone
