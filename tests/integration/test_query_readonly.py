"""`ledger query` reads the store and nothing else, on DuckDB and on Postgres."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from cli.main import main
from projections.factory import open_store
from projections.query import first_word
from projections.sql_store import SqlProjectionStore

pytestmark = pytest.mark.integration
Run = Callable[..., tuple[int, str, str]]
SECRET = "/etc/passwd"


def _fill(url: str) -> None:
    with open_store(url) as store:
        assert isinstance(store, SqlProjectionStore)
        store.sql("INSERT INTO balances VALUES ('user:a', 7, 'USER', 1, NULL)")


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def ledger(url: str, *args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as e:
            main(["--store", url, "query", *args])
        out, err = capsys.readouterr()
        return int(e.value.code or 0), out, err

    return ledger


def refused(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 2, (code, out, err)
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def duckdb_url(tmp_path: Path) -> str:
    url = f"duckdb:///{tmp_path / 'q.duckdb'}"
    _fill(url)
    return url


def test_duckdb_select_still_works(run: Run, duckdb_url: str) -> None:
    code, out, _ = run(duckdb_url, "SELECT account, balance FROM balances", "--json")
    assert code == 0 and json.loads(out) == {"account": "user:a", "balance": 7}


@pytest.mark.parametrize("sql", [
    f"SELECT * FROM read_text('{SECRET}')",
    f"SELECT * FROM read_csv('{SECRET}', sep = ':')",
    "SELECT * FROM glob('/etc/*')",
    "ATTACH '{tmp}/other.duckdb' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET threads = 1",
    "RESET memory_limit",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "PRAGMA threads = 1",
])
def test_duckdb_refuses_files_extensions_and_settings(run: Run, duckdb_url: str,
                                                      tmp_path: Path, sql: str) -> None:
    err = refused(run(duckdb_url, sql.format(tmp=tmp_path)))
    assert "refused" in err, err
    assert not (tmp_path / "other.duckdb").exists()


@pytest.mark.parametrize("sql", [
    "COPY (SELECT * FROM balances) TO '{tmp}/out.csv'",
    "COPY balances TO '{tmp}/out.csv'",
    "EXPORT DATABASE '{tmp}/out.csv'",
])
def test_duckdb_writes_no_file(run: Run, duckdb_url: str, tmp_path: Path, sql: str) -> None:
    refused(run(duckdb_url, sql.format(tmp=tmp_path)))
    assert not (tmp_path / "out.csv").exists()


def test_duckdb_query_stops_at_its_timeout(run: Run, duckdb_url: str) -> None:
    err = refused(run(duckdb_url, "SELECT count(*) FROM range(1000000) a, range(1000000) b",
                      "--timeout", "0.2"))
    assert "--timeout 0.2s" in err


def test_first_word_skips_comments_and_parentheses() -> None:
    assert first_word("  -- note\n /* a\n b */ (SELECT 1)") == "select"
    assert first_word("With x AS (SELECT 1) SELECT * FROM x") == "with"
    assert first_word("") == "" and first_word("; SELECT 1") == ""


# -- Postgres ---------------------------------------------------------------------------
@pytest.fixture
def pg_urls(postgres_url: str) -> Iterator[tuple[str, str]]:
    """(the superuser's URL, a SELECT-only role's URL) on a fresh schema."""
    from tests.integration.journal_factory import fresh_pg_url

    admin_url = fresh_pg_url(postgres_url)
    _fill(admin_url)
    url = make_url(admin_url)
    schema = url.query["options"].split("=", 1)[1]
    role = f"q_{uuid.uuid4().hex[:10]}"
    dsn = dict(host=url.host, port=url.port, user=url.username, password=url.password,
               dbname=url.database, autocommit=True)
    with psycopg.connect(**dsn) as conn:  # type: ignore[arg-type]
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    try:
        yield admin_url, url.set(username=role, password=None).render_as_string(False)
    finally:
        with psycopg.connect(**dsn) as conn:  # type: ignore[arg-type]
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_postgres_select_still_works(run: Run, pg_urls: tuple[str, str]) -> None:
    code, out, _ = run(pg_urls[1], "SELECT account, balance FROM balances", "--csv")
    assert code == 0 and out == "account,balance\nuser:a,7\n"
    code, out, _ = run(pg_urls[1], "SELECT account FROM balances WHERE balance < 0")
    assert code == 0 and out.split() == ["account", "-------"]


@pytest.mark.parametrize("sql", [
    f"SELECT pg_read_file('{SECRET}')",
    "COPY (SELECT * FROM balances) TO '{tmp}/out.csv'",
    "SELECT 1; COPY (SELECT * FROM balances) TO '{tmp}/out.csv'",
    "SELECT 1 WHERE 'a' LIKE 'a%'; SELECT pg_read_file('/etc/passwd')",
    "SET work_mem = '1MB'",
    "RESET ROLE",
    "SELECT set_config('role', 'postgres', false); SELECT 1",
    "DELETE FROM balances",
    "WITH gone AS (DELETE FROM balances RETURNING *) SELECT * FROM gone",
    "CREATE TABLE x (a int)",
    "LOAD 'dblink'",
    "ATTACH 'x'",
])
def test_postgres_refuses_files_writes_and_settings(run: Run, pg_urls: tuple[str, str],
                                                    tmp_path: Path, sql: str) -> None:
    refused(run(pg_urls[1], sql.format(tmp=tmp_path)))
    assert not (tmp_path / "out.csv").exists()
    assert run(pg_urls[1], "SELECT count(*) AS n FROM balances", "--json")[1] == '{"n": 1}\n'


def test_postgres_refuses_a_role_that_may_touch_files(run: Run,
                                                      pg_urls: tuple[str, str]) -> None:
    err = refused(run(pg_urls[0], "SELECT count(*) FROM balances"))
    assert "query refused" in err and "member of" in err


def test_postgres_query_stops_at_its_timeout(run: Run, pg_urls: tuple[str, str]) -> None:
    err = refused(run(pg_urls[1], "SELECT pg_sleep(60)", "--timeout", "0.2"))
    assert "--timeout 0.2s" in err


def test_postgres_url_in_psycopg_spelling(run: Run, pg_urls: tuple[str, str]) -> None:
    url = pg_urls[1].replace("postgresql+psycopg://", "postgres://", 1)
    assert run(url, "SELECT count(*) AS n FROM balances", "--json")[:2] == (0, '{"n": 1}\n')
