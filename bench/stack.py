"""Where the bench runs: a given broker and database, or a dev stack of its own.

Without --bootstrap (or --postgres-url) the bench starts what is missing with
devstack in <home>/bench-stack, on ports it finds free (never 9092/5432,
which other stacks on the machine may use), and stops exactly that at the end.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from sqlalchemy.engine import make_url

import devstack
from devstack import postgres as pg
from devstack.proc import port_free
from ledger.kafka import make_admin
from ledger.settings import Settings, default_home

LOG = logging.getLogger("bench")
KAFKA_FIRST_PORT = 9192
PG_FIRST_PORT = 5532
CONTROLLER_OFFSET = 10_000
AVOID = {9092, 19092, 5432, 45432, 39092, 49092, 35432}


@dataclass(frozen=True)
class Target:
    bootstrap: str
    postgres_url: str
    started_home: Path | None  # a stack this run started, to stop at the end


def free_kafka_port(first: int = KAFKA_FIRST_PORT) -> int:
    """A broker port whose controller port (+10000) is free as well."""
    for port in range(first, first + 400, 10):
        pair = (port, port + CONTROLLER_OFFSET)
        if not AVOID.intersection(pair) and all(port_free(p) for p in pair):
            return port
    raise RuntimeError(f"no free pair of Kafka ports from {first}")


def free_port(first: int) -> int:
    for port in range(first, first + 400):
        if port not in AVOID and port_free(port):
            return port
    raise RuntimeError(f"no free port from {first}")


@contextmanager
def target(bootstrap: str | None, postgres_url: str | None, home: Path | None = None,
           need_postgres: bool = True) -> Iterator[Target]:
    """The broker and database to measure; starts (and then stops) what is not given."""
    if not need_postgres:
        postgres_url = postgres_url or "unused"
    if bootstrap and postgres_url:
        yield Target(bootstrap, postgres_url, None)
        return
    stack_home = (home or default_home()) / "bench-stack"
    jars = default_home() / "kafka-4.1.1" / "lib"
    try:
        if bootstrap is None:
            port = free_kafka_port()
            LOG.info("starting a dev stack in %s (Kafka on %d)", stack_home, port)
            info = devstack.up(stack_home, brokers=1, postgres=postgres_url is None,
                               base_port=port, pg_port=free_port(PG_FIRST_PORT), jars_dir=jars)
            assert info.bootstrap is not None
            bootstrap = info.bootstrap
            postgres_url = postgres_url or info.postgres_url
        else:
            LOG.info("starting PostgreSQL in %s", stack_home)
            postgres_url = pg.up(stack_home, free_port(PG_FIRST_PORT)).url
        assert postgres_url is not None
        yield Target(bootstrap, postgres_url, stack_home)
    finally:
        if stack_home.exists():
            for line in devstack.down(stack_home, wipe=True):
                LOG.info("bench stack: %s", line)


def pg_conninfo(url: str) -> dict[str, object]:
    """psycopg.connect keyword arguments for a SQLAlchemy Postgres URL."""
    u = make_url(url)
    return {"host": u.host, "port": u.port, "user": u.username, "password": u.password,
            "dbname": u.database}


def fresh_schema_url(url: str, name: str) -> str:
    """The database URL with a new, empty schema first on the search path."""
    import psycopg

    schema = f"{name}_{uuid.uuid4().hex[:8]}".replace("-", "_").lower()
    with psycopg.connect(**pg_conninfo(url), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(f"CREATE SCHEMA {schema}")
    u = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return u.render_as_string(hide_password=False)


def drop_schema(url: str) -> None:
    import psycopg

    u = make_url(url)
    options = str(u.query.get("options", ""))
    if not options.startswith("-csearch_path="):
        return
    schema = options.split("=", 1)[1]
    with psycopg.connect(**pg_conninfo(url), autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def postgres_version(url: str) -> str:
    import psycopg

    with psycopg.connect(**pg_conninfo(url)) as conn:  # type: ignore[arg-type]
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def delete_topics(settings: Settings, names: list[str]) -> None:
    """Drop the run's topics from a broker the bench did not start."""
    admin = make_admin(settings)
    existing = set(admin.list_topics(timeout=10).topics)
    todo = [settings.topic(n) for n in names if settings.topic(n) in existing]
    for name, fut in (admin.delete_topics(todo, operation_timeout=30).items() if todo else []):
        try:
            fut.result()
        except KafkaException as e:
            LOG.warning("could not delete topic %s: %s", name, e)
