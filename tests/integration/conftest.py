"""The real stack for the whole test session: one Kafka broker and one Postgres.

LEDGER_TEST_BOOTSTRAP / LEDGER_TEST_POSTGRES point the tests at servers that are
already running; otherwise the session starts its own and stops it at the end: as
containers of docker/compose.yml's images where a Docker engine answers (testcontainers,
tests/integration/containers.py), else with the dev stack (the same code as `ledger dev
up`) in a temporary home.
Each test gets fresh topics under a unique prefix, so tests never see each
other's records.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ledger.settings import (
    ENV_CREDIT_KEY,
    ENV_STATE_DIR,
    ENV_TEST_BOOTSTRAP,
    ENV_TEST_KAFKA_PORT,
    ENV_TEST_PG_PORT,
    ENV_TEST_POSTGRES,
    Settings,
    default_home,
)
from ledger.topics import create_topics
from tests.integration import containers
from tests.integration.journal_factory import fresh_pg_url
from tests.integration.ledger_helpers import TEST_CREDIT_KEY
from tests.integration.stacks import SESSION_KAFKA, SESSION_PG

TEST_KAFKA_PORT = int(os.environ.get(ENV_TEST_KAFKA_PORT, str(SESSION_KAFKA.base)))
TEST_PG_PORT = int(os.environ.get(ENV_TEST_PG_PORT, str(SESSION_PG.first)))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(bootstrap, postgres_url) of the session's real broker and database."""
    bootstrap = os.environ.get(ENV_TEST_BOOTSTRAP)
    pg_url = os.environ.get(ENV_TEST_POSTGRES)
    if bootstrap and pg_url:
        yield bootstrap, pg_url
        return
    if containers.docker_available():
        with containers.session_stack(None if bootstrap else TEST_KAFKA_PORT,
                                      None if pg_url else TEST_PG_PORT) as (kafka, pg):
            yield bootstrap or str(kafka), pg_url or str(pg)
        return
    import devstack

    home = Path(tmp_path_factory.mktemp("stack"))
    info = devstack.up(
        home,
        brokers=1,
        postgres=not pg_url,
        base_port=TEST_KAFKA_PORT,
        pg_port=TEST_PG_PORT,
        jars_dir=default_home() / "kafka-4.1.1" / "lib",
    )
    try:
        yield bootstrap or info.bootstrap, pg_url or str(info.postgres_url)
    finally:
        devstack.down(home, wipe=True)


@pytest.fixture(scope="session")
def bootstrap(stack: tuple[str, str]) -> str:
    return stack[0]


@pytest.fixture(scope="session")
def postgres_url(stack: tuple[str, str]) -> str:
    return stack[1]


@pytest.fixture(autouse=True)
def credit_key_for_spawned_processors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `ledger serve` a test starts as a process refuses to run without a credit key:
    it inherits the one the in-process processors use (make_settings, start_processor)."""
    monkeypatch.setenv(ENV_CREDIT_KEY, TEST_CREDIT_KEY)


@pytest.fixture(autouse=True)
def state_dir_for_spawned_processors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A `ledger serve` a test starts keeps its state in the test's directory, never in
    the user's home."""
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path / "state"))


@pytest.fixture
def make_settings(bootstrap: str, tmp_path: Path) -> Callable[..., Settings]:
    """Factory: settings on fresh, created topics under a unique prefix."""

    def make(create: bool = True, partitions: int = 3, **overrides: object) -> Settings:
        prefix = f"t{uuid.uuid4().hex[:10]}"
        settings = Settings(
            bootstrap=bootstrap,
            topic_prefix=prefix,
            partitions=partitions,
            store=f"duckdb:///{tmp_path / (prefix + '.duckdb')}",
            home=tmp_path,
            credit_key=TEST_CREDIT_KEY,
        ).with_(**overrides)
        if create:
            create_topics(settings)
        return settings

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture(params=["duckdb", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each kind: a DuckDB file, a Postgres database."""
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'store.duckdb'}"
    return fresh_pg_url(request.getfixturevalue("postgres_url"))
