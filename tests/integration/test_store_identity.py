"""One store, one journal: `project`, `replay` and `verify` refuse a store that projects
another journal (exit 2, one line naming both) unless told --reset; on both stores."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cli.main import main
from ledger.settings import Settings
from projections.factory import open_store
from projections.sql_store import SqlProjectionStore
from projections.store import JournalIdentity
from tests.integration.journal_factory import Journal, write_journal

pytestmark = pytest.mark.integration
MakeSettings = Callable[..., Settings]
Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def journals(make_settings: MakeSettings) -> tuple[tuple[Settings, Journal], ...]:
    """Two journals under two prefixes on the same cluster."""
    out = []
    for seed in (1, 2):
        settings = make_settings(partitions=2)
        out.append((settings, write_journal(settings, 60, seed=seed, txn_size=30)))
    return tuple(out)


@pytest.fixture
def ledger(capsys: pytest.CaptureFixture[str], store_url: str) -> Run:
    def run(settings: Settings, *args: str) -> tuple[int, str, str]:
        argv = ["--bootstrap", settings.bootstrap, "--topic-prefix", settings.topic_prefix,
                "--store", store_url, *args]
        with pytest.raises(SystemExit) as e:
            main(argv)
        out, err = capsys.readouterr()
        return int(e.value.code or 0), out, err

    return run


def balances(store_url: str) -> dict[str, int]:
    with open_store(store_url) as store:
        return dict(store.balance_pairs())


def refused(result: tuple[int, str, str], *names: str) -> None:
    code, out, err = result
    assert code == 2 and out == "", (code, out, err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n"), err  # one line, the last
    assert errors[0].startswith("error: store ") and "Traceback" not in err, err
    for name in names:
        assert name in err, (name, err)


def test_another_journal_is_refused_unless_reset(
        ledger: Run, store_url: str, journals: tuple[tuple[Settings, Journal], ...]) -> None:
    (a, journal_a), (b, journal_b) = journals
    assert ledger(a, "project", "--until-caught-up")[0] == 0
    with open_store(store_url) as store:
        recorded = store.journal()
    assert recorded is not None and recorded.prefix == a.topic_prefix and recorded.cluster_id

    names = (f"prefix '{a.topic_prefix}'", f"prefix '{b.topic_prefix}'", recorded.cluster_id)
    refused(ledger(b, "project", "--until-caught-up"), *names)
    refused(ledger(b, "replay"), *names)
    refused(ledger(b, "verify"), *names)
    assert balances(store_url) == journal_a.balances()
    assert ledger(a, "verify")[0] == 0

    code, out, _ = ledger(b, "project", "--until-caught-up", "--reset")
    assert code == 0 and out.startswith(f"projected {len(journal_b.events)} events")
    assert balances(store_url) == journal_b.balances()
    assert ledger(b, "verify")[0] == 0
    refused(ledger(a, "project", "--until-caught-up"), *names)

    assert ledger(a, "replay", "--reset")[0] == 0
    assert balances(store_url) == journal_a.balances()
    assert ledger(a, "verify")[0] == 0
    assert ledger(a, "project", "--until-caught-up")[0] == 0  # replay recorded a's journal


def test_another_cluster_is_another_journal(
        ledger: Run, store_url: str, journals: tuple[tuple[Settings, Journal], ...]) -> None:
    (a, _), _ = journals
    assert ledger(a, "replay")[0] == 0
    with open_store(store_url) as store:
        assert isinstance(store, SqlProjectionStore)
        store.sql("UPDATE projection_meta SET value = 'another-cluster' "
                  "WHERE key = 'journal_cluster_id'")
    refused(ledger(a, "project", "--until-caught-up"), "another-cluster",
            f"prefix '{a.topic_prefix}'")
    refused(ledger(a, "replay"), "another-cluster")


def test_a_store_from_before_identities_is_known_by_its_positions(
        ledger: Run, store_url: str, journals: tuple[tuple[Settings, Journal], ...]) -> None:
    (a, journal_a), (b, _) = journals
    assert ledger(a, "project", "--until-caught-up")[0] == 0
    with open_store(store_url) as store:
        assert isinstance(store, SqlProjectionStore)
        store.sql("DELETE FROM projection_meta WHERE key LIKE 'journal%'")
        assert store.journal() is None
    refused(ledger(b, "project", "--until-caught-up"), f"prefix '{a.topic_prefix}'",
            "(unknown)")
    assert ledger(a, "project", "--until-caught-up")[0] == 0  # adopted and recorded
    with open_store(store_url) as store:
        held = store.journal()
    assert isinstance(held, JournalIdentity) and held.prefix == a.topic_prefix
    assert held.cluster_id and balances(store_url) == journal_a.balances()
