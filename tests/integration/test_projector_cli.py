"""The read commands as users call them: output formats, exit codes, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.main import main
from ledger.settings import Settings
from tests.integration.journal_factory import Journal, write_journal

pytestmark = pytest.mark.integration
MakeSettings = Callable[..., Settings]
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def projected(make_settings: MakeSettings, tmp_path: Path) -> tuple[Settings, Journal, str]:
    settings = make_settings(partitions=2)
    journal = write_journal(settings, 400, seed=51, txn_size=100)
    store = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    return settings, journal, store


@pytest.fixture
def ledger(capsys: pytest.CaptureFixture[str],
           projected: tuple[Settings, Journal, str]) -> Run:
    settings, _, store = projected

    def run(*args: str, store_url: str | None = None) -> tuple[int, str, str]:
        argv = ["--bootstrap", settings.bootstrap, "--topic-prefix", settings.topic_prefix,
                "--store", store_url or store, *args]
        with pytest.raises(SystemExit) as e:
            main(argv)
        out, err = capsys.readouterr()
        return int(e.value.code or 0), out, err

    return run


def test_project_balance_history_query(ledger: Run,
                                       projected: tuple[Settings, Journal, str]) -> None:
    _, journal, _ = projected
    code, out, _ = ledger("project", "--until-caught-up")
    assert code == 0 and out.startswith(f"projected {len(journal.events)} events")
    want = journal.balances()["user:u5"]
    assert ledger("balance", "user:u5", "--json")[:2] == (
        0, json.dumps({"account": "user:u5", "balance": want}) + "\n")
    assert ledger("balance", "user:u5")[1] == f"user:u5 {want}\n"
    code, _, err = ledger("balance", "user:nobody")
    assert code == 1 and err.startswith("error: unknown account user:nobody")

    mine = [e for e in journal.events if any(p["account"] == "user:u5" for p in e["postings"])]
    code, out, _ = ledger("history", "user:u5", "--json", "--limit", "3")
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in mine[-3:]]
    assert sum(r["amount"] for r in json.loads("[" + ",".join(
        ledger("history", "user:u5", "--json")[1].splitlines()) + "]")) == want
    code, out, _ = ledger("history", "user:u5", "--limit", "2")
    lines = out.splitlines()
    assert lines[0].split() == ["occurred_at", "kind", "amount", "event_id", "actor", "reason"]
    assert len(lines) == 4 and "\t" not in out

    code, out, _ = ledger("query", "SELECT type, count(*) AS n FROM balances GROUP BY type "
                          "ORDER BY type")
    assert code == 0 and out.splitlines()[0].split() == ["type", "n"]
    assert out.splitlines()[2].split()[0] == "ROOM"
    code, out, _ = ledger("query", "SELECT account, balance FROM balances "
                          "WHERE account = 'user:u5'", "--json")
    assert json.loads(out) == {"account": "user:u5", "balance": want}
    code, out, _ = ledger("query", "SELECT account, balance FROM balances "
                          "WHERE account = 'user:u5'", "--csv")
    assert out == f"account,balance\nuser:u5,{want}\n"


def test_query_refuses_writes_in_one_line(ledger: Run) -> None:
    assert ledger("project", "--until-caught-up")[0] == 0
    code, out, err = ledger("query", "DELETE FROM balances")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "read-only" in err
    assert ledger("query", "SELEC nonsense")[0] == 2
    assert ledger("query", "SELECT count(*) FROM balances")[0] == 0


def test_query_of_an_unreachable_postgres_exits_3(ledger: Run) -> None:
    code, _, err = ledger("query", "SELECT 1", store_url="postgresql+psycopg://x@127.0.0.1:1/db")
    assert code == 3 and err.startswith("error: cannot reach Postgres")


def test_unreachable_database_and_broker_exit_3(ledger: Run, make_settings: MakeSettings,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = ledger("balance", "user:a",
                          store_url="postgresql+psycopg://u:pw@127.0.0.1:1/db?connect_timeout=2")
    assert code == 3 and err.startswith("error: cannot reach Postgres at") and "pw" not in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        main(["--bootstrap", "127.0.0.1:1", "--store", "duckdb:///:memory:", "project"])
    assert e.value.code == 3 and "127.0.0.1:1" in capsys.readouterr().err


def test_replay_without_progress_on_a_pipe(ledger: Run,
                                           projected: tuple[Settings, Journal, str]) -> None:
    _, journal, _ = projected
    code, out, err = ledger("replay")
    assert code == 0 and out.startswith(f"replayed {len(journal.events)} events")
    assert "events/s" not in err  # no progress line unless asked or on a terminal
    assert ledger("verify")[0] == 0
