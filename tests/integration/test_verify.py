"""`ledger verify`: passes on an honest store, names every kind of damage, exits 1."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ledger.settings import Settings
from projections.checksum import balance_checksum
from projections.factory import open_store
from projections.projector import Projector
from projections.sql_store import SqlProjectionStore
from projections.verify import VerifyReport, verify
from tests.integration.journal_factory import (
    Journal,
    JournalWriter,
    fresh_pg_url,
    ledger_argv,
    make_events,
    make_journal,
    write_journal,
)

pytestmark = pytest.mark.integration
MakeSettings = Callable[..., Settings]


def projected(settings: Settings, url: str) -> None:
    with open_store(url) as store:
        Projector(settings, store, until_caught_up=True).run()


def checks(report: VerifyReport) -> set[str]:
    return {v.check for v in report.violations}


def test_cli_json_on_an_honest_store(make_settings: MakeSettings, postgres_url: str) -> None:
    settings = make_settings(partitions=3)
    journal = write_journal(settings, 1_500, txn_size=200)
    url = fresh_pg_url(postgres_url)
    projected(settings, url)
    run = subprocess.run([*ledger_argv(settings, url), "verify", "--json"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (line,) = run.stdout.splitlines()
    out = json.loads(line)
    assert out == {"ok": True, "events": len(journal.events),
                   "accounts": len(journal.balances()),
                   "checksum": balance_checksum(journal.balances().items()), "violations": []}


def test_damaged_store_fails_with_a_readable_report(make_settings: MakeSettings,
                                                    tmp_path: Path) -> None:
    settings = make_settings(partitions=2)
    write_journal(settings, 800, txn_size=200)
    url = f"duckdb:///{tmp_path / 'v.duckdb'}"
    projected(settings, url)
    with open_store(url) as store:
        assert isinstance(store, SqlProjectionStore)
        store.sql("UPDATE balances SET balance = balance + 5 WHERE account = 'user:u3'")
        store.sql("DELETE FROM audit_log WHERE account = 'room:r1' AND posting = 1")
    run = subprocess.run([*ledger_argv(settings, url), "verify"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    assert run.stdout.startswith("verify FAILED")
    assert "[balance_vs_audit]" in run.stdout and "user:u3" in run.stdout
    assert "[audit_vs_log]" in run.stdout and "[balances_topic]" in run.stdout
    assert "Traceback" not in run.stderr


def test_journal_defects_and_a_lagging_store(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(partitions=2)
    journal = make_journal(300, seed=41)
    broken = {**journal.events[0], "event_id": "bad-1",
              "postings": [{"account": "user:broke", "amount": -50},
                           {"account": "system:spent", "amount": 40}]}
    with JournalWriter(settings) as w:
        w.write_journal(journal, balances=False)
        w.transaction(w.event_records([broken]))
        full = Journal([*journal.events, broken], journal.accounts)
        w.transaction(w.balance_records(full.balances()))
    url = f"duckdb:///{tmp_path / 'j.duckdb'}"
    projected(settings, url)
    with open_store(url) as store:
        report = verify(settings, store)
        assert checks(report) == {"unbalanced", "floor"}, report.violations
        assert "bad-1" in report.violations[0].detail
        assert report.checksum == balance_checksum(full.balances().items())
        with JournalWriter(settings) as w:
            w.transaction(w.event_records(make_events(10, seed=42)))
        assert "behind" in checks(verify(settings, store))


def test_processor_snapshots_that_disagree_are_a_violation(make_settings: MakeSettings,
                                                           tmp_path: Path) -> None:
    settings = make_settings(partitions=2)
    journal = write_journal(settings, 500, seed=43)
    url = f"duckdb:///{tmp_path / 's.duckdb'}"
    projected(settings, url)
    wrong = {"user:u7": journal.balances()["user:u7"] + 1, "room:ghost": 9}
    with JournalWriter(settings) as w:
        w.transaction(w.balance_records(wrong))
    with open_store(url) as store:
        report = verify(settings, store)
    assert checks(report) == {"balances_topic"}
    detail = report.violations[0].detail
    assert detail.startswith("2 user/room balances differ") and "room:ghost" in detail
    assert "user:u7" in detail
