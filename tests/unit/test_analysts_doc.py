"""docs/analysts.md cannot drift from the schema: every table of columns there is the
real one (names, order, types), every table and view is documented, every kind, actor and
system account in a demo-like store is listed, and every SQL example runs against a
snapshot of that store (returning rows, unless the text says it returns none)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from projections.factory import open_store
from projections.snapshot_requests import take_snapshot
from projections.store import JournalIdentity
from tests import views_fold as fold

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"
TEXT = DOC.read_text()
EXAMPLES = re.findall(r"\*\*(\d+)\. ([^*]+)\*\*(.*?)```sql\n(.*?)```", TEXT, re.DOTALL)


def documented_columns() -> dict[str, list[tuple[str, str]]]:
    """### `name` headings and the (column, type) rows of the table under each."""
    out = {}
    for name, body in re.findall(r"^### `(\w+)`\n(.*?)(?=^#)", TEXT, re.DOTALL | re.M):
        rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", body, re.M)
        out[name] = rows
    return out


def first_column(heading: str) -> set[str]:
    """The backquoted first cells of the table under a heading."""
    body = TEXT.split(heading, 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", body, re.M))


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    tmp = tmp_path_factory.mktemp("doc")
    url = f"duckdb:///{tmp / 'demo.duckdb'}"
    with open_store(url) as store:
        store.claim_journal(JournalIdentity("demo", "cluster-1"))
        fold.fill_store(store, fold.demo_like_events(900, seed=5))
    take_snapshot(url, tmp / "snapshot.duckdb")
    con = duckdb.connect(str(tmp / "snapshot.duckdb"), read_only=True)
    yield con
    con.close()


def test_there_are_ten_examples() -> None:
    assert [int(n) for n, *_ in EXAMPLES] == list(range(1, 11))


@pytest.mark.parametrize(("number", "question", "text", "sql"), EXAMPLES,
                         ids=[n for n, *_ in EXAMPLES])
def test_every_example_runs_on_a_demo_snapshot(snapshot: duckdb.DuckDBPyConnection,
                                               number: str, question: str, text: str,
                                               sql: str) -> None:
    rows = snapshot.execute(sql).fetchall()
    if "no rows" in question + text:
        assert rows == [], f"example {number} should return no rows"
    else:
        assert rows, f"example {number} returns nothing on a demo-like store"


def test_every_table_and_view_is_documented_with_its_columns_and_types(
        snapshot: duckdb.DuckDBPyConnection) -> None:
    documented = documented_columns()
    names = {n for (n,) in snapshot.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT internal AND NOT temporary "
        "UNION SELECT view_name FROM duckdb_views() WHERE NOT internal AND NOT temporary"
    ).fetchall()}
    assert set(documented) == names
    for name, columns in documented.items():
        real = [(c, t) for c, t, *_ in snapshot.execute(f"DESCRIBE {name}").fetchall()]
        assert columns == real, name


def test_every_kind_actor_and_system_account_is_listed(
        snapshot: duckdb.DuckDBPyConnection) -> None:
    kinds = {k for (k,) in snapshot.execute("SELECT DISTINCT kind FROM audit_log").fetchall()}
    actors = {a for (a,) in snapshot.execute("SELECT DISTINCT actor FROM audit_log").fetchall()}
    system = {a for (a,) in snapshot.execute(
        "SELECT account FROM balances WHERE type = 'SYSTEM'").fetchall()}
    assert kinds <= first_column("### Kinds of event") == {
        "GRANTED", "EARNED", "SPENT", "JOINED", "REVERSED"}
    assert actors <= first_column("### Actors") == {"SYSTEM", "USER", "ADMIN"}
    assert system <= first_column("### Accounts")


def test_the_demo_asks_one_of_these_questions() -> None:
    from ledger.demo import ANALYST_QUESTION, ANALYST_SQL

    assert any(q == ANALYST_QUESTION and sql.strip() == ANALYST_SQL
               for _, q, _, sql in EXAMPLES)
