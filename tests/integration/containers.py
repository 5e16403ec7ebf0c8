"""The session's Kafka and PostgreSQL as containers (testcontainers), where a Docker engine
answers: the images and broker settings of docker/compose.yml, published on the session
stack's ports (SESSION_KAFKA, SESSION_PG in tests/integration/stacks.py), so the tests run
against what the compose file runs and the port plan holds here too. Without an engine the
session uses the dev stack.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yml"
KAFKA_STARTED = r"Kafka Server started"
START_TIMEOUT_S = 180


def docker_available(docker: str = "docker") -> bool:
    """testcontainers is installed and `docker info` reaches an engine."""
    if importlib.util.find_spec("testcontainers") is None or shutil.which(docker) is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def compose_file(path: Path = COMPOSE) -> dict[str, Any]:
    import yaml  # a dev dependency: only where the compose file is read

    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def compose_services(path: Path = COMPOSE) -> dict[str, Any]:
    services: dict[str, Any] = compose_file(path)["services"]
    return services


def host_listener_port(kafka: Mapping[str, Any]) -> int:
    """The container port compose publishes for clients on the host ("127.0.0.1:9092:9094")."""
    (published,) = kafka["ports"]
    return int(str(published).rsplit(":", 1)[1])


def kafka_environment(kafka: Mapping[str, Any], host_port: int) -> dict[str, str]:
    """The compose broker's environment, its host listener advertised as 127.0.0.1:host_port
    (the port the test container publishes it on) instead of compose's localhost:9092."""
    env = {key: str(value) for key, value in kafka["environment"].items()}
    env["KAFKA_ADVERTISED_LISTENERS"] = ",".join(
        f"HOST://127.0.0.1:{host_port}" if listener.startswith("HOST://") else listener
        for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    return env


@contextmanager
def session_stack(kafka_port: int | None,
                  pg_port: int | None) -> Iterator[tuple[str | None, str | None]]:
    """(bootstrap, postgres_url) of a broker published on kafka_port and a database on
    pg_port; None for what was not asked (its port None)."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before 4.14
        from testcontainers.postgres import PostgresContainer

    services = compose_services()
    bootstrap = pg_url = None
    with ExitStack() as stack:
        if kafka_port is not None:
            service = services["kafka"]
            broker = DockerContainer(service["image"]).with_kwargs(hostname="kafka")
            for key, value in kafka_environment(service, kafka_port).items():
                broker.with_env(key, value)
            broker.with_bind_ports(host_listener_port(service), kafka_port)
            broker.waiting_for(
                LogMessageWaitStrategy(KAFKA_STARTED).with_startup_timeout(START_TIMEOUT_S))
            stack.enter_context(broker)
            bootstrap = f"127.0.0.1:{kafka_port}"
        if pg_port is not None:
            database = PostgresContainer(services["postgres"]["image"], username="postgres",
                                         password=uuid.uuid4().hex, dbname="ledger",
                                         driver="psycopg")
            database.with_bind_ports(5432, pg_port)
            stack.enter_context(database)
            pg_url = database.get_connection_url()
        yield bootstrap, pg_url
