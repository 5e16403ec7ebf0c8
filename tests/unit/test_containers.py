"""The container files without a Docker engine: docker/compose.yml read as YAML, the
Dockerfile read line by line, each held to what the ledger needs and to each other, and the
Dockerfile's build commands to the ones the README documents."""

from __future__ import annotations

import base64
import http.server
import re
import shlex
import subprocess
import sys
import threading
from itertools import takewhile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli.main import cli
from tests.integration import containers

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LEDGER_SERVICES = ("topics", "serve-a", "serve-b", "project")
PROBED = ("serve-a", "serve-b", "project")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return containers.compose_services()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return containers.compose_file()


# --- the Dockerfile, read ---------------------------------------------------------------------

def instructions(text: str) -> list[tuple[int, str, str]]:
    """(stage, INSTRUCTION, arguments) with continuation lines joined and comments dropped;
    stage counts the FROMs (0 before the first)."""
    out, stage, logical = [], 0, ""
    for line in text.splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1]
            continue
        word, _, rest = logical.strip().partition(" ")
        stage += word.upper() == "FROM"
        out.append((stage, word.upper(), rest.strip()))
        logical = ""
    return out


def pip_commands(text: str) -> list[str]:
    """Each `pip ...` a RUN executes, its --mount flags (where the files come from) left out."""
    runs = ([a for a in shlex.split(rest) if not a.startswith("--mount=")]
            for _, word, rest in instructions(text) if word == "RUN")
    return [" ".join(args) for args in runs if args[:1] == ["pip"]]


def runtime_env(text: str) -> dict[str, str]:
    """The ENV of the last stage (the image)."""
    steps = instructions(text)
    last = max(s for s, _, _ in steps)
    return dict(a.split("=", 1) for s, word, rest in steps if s == last and word == "ENV"
                for a in shlex.split(rest))


def readme_command_lines() -> set[str]:
    """Every line of a fenced block in the README, a trailing comment left out."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", (ROOT / "README.md").read_text(),
                        re.MULTILINE | re.DOTALL)
    return {" ".join(line.split("#", 1)[0].split()) for b in blocks for line in b.splitlines()}


def test_the_image_is_built_with_the_commands_the_readme_documents() -> None:
    commands = pip_commands(DOCKERFILE.read_text())
    assert [c.split()[:2] for c in commands] == [["pip", "wheel"], ["pip", "install"]]
    assert commands[0].endswith(" .")  # the wheel of this checkout, C reader compiled in it
    assert commands[1].endswith(" points-ledger")  # the package, no extras
    documented = readme_command_lines()
    assert not [c for c in commands if c not in documented], (commands, "README.md")


def test_pip_commands_are_read_as_docker_runs_them() -> None:
    text = ("FROM x AS build\n# a comment\nRUN pip wheel --wheel-dir w \\\n    .\n"
            "FROM x\nRUN --mount=type=bind,from=build,source=/w,target=/w \\\n"
            "    pip install --no-index w\nRUN apt-get install gcc\n")
    assert pip_commands(text) == ["pip wheel --wheel-dir w .", "pip install --no-index w"]
    assert [(s, w) for s, w, _ in instructions(text)] == [
        (1, "FROM"), (1, "RUN"), (2, "FROM"), (2, "RUN"), (2, "RUN")]


def test_the_image_compiles_in_one_stage_and_runs_unprivileged_in_another() -> None:
    text = DOCKERFILE.read_text()
    steps = instructions(text)
    last = max(s for s, _, _ in steps)
    assert last >= 2, "multi-stage"
    build = " ".join(rest for s, w, rest in steps if s < last and w == "RUN")
    runtime = [(w, rest) for s, w, rest in steps if s == last]
    assert "gcc" in build
    assert not [r for w, r in runtime if w == "RUN" and "gcc" in r]
    user = [rest for w, rest in runtime if w == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert ("ENTRYPOINT", '["ledger"]') in runtime
    state_dir = runtime_env(text)["LEDGER_STATE_DIR"]
    assert ("VOLUME", f'["{state_dir}"]') in runtime


def test_no_compiled_extension_or_environment_goes_into_the_build_context() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {"**/*.so", ".venv", ".git"} <= ignored


# --- the compose file ------------------------------------------------------------------------

def ledger_argv(service: dict[str, Any]) -> list[str]:
    return [str(a) for a in service.get("command", [])]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_the_stack_has_its_services(services: dict[str, Any]) -> None:
    assert {"kafka", "postgres", *LEDGER_SERVICES} <= set(services)
    for name in LEDGER_SERVICES:
        build = services[name]["build"]
        assert (containers.COMPOSE.parent / build["context"]).resolve() == ROOT, name
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE, name
    assert len({services[n]["image"] for n in LEDGER_SERVICES}) == 1


def test_commands_parse_with_the_real_cli(services: dict[str, Any]) -> None:
    """Each service's arguments, then --help: click parses them all first, so an unknown
    option fails (exit 2) before the help is printed (exit 0)."""
    runner = CliRunner()
    for name in LEDGER_SERVICES:
        argv = ledger_argv(services[name])
        done = runner.invoke(cli, [*argv, "--help"], prog_name="ledger")
        assert done.exit_code == 0, (name, done.output)
        path = " ".join(takewhile(lambda a: not a.startswith("-"), argv))
        assert done.output.startswith(f"Usage: ledger {path} "), (name, done.output)
    assert runner.invoke(cli, ["serve", "--no-such-option", "--help"]).exit_code == 2


def test_kafka_is_one_kraft_node_with_its_journal_in_a_volume(
    services: dict[str, Any], compose: dict[str, Any]
) -> None:
    kafka = services["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"])
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert not [k for k in env if "ZOOKEEPER" in k]
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    assert named_volumes(kafka, compose)[env["KAFKA_LOG_DIRS"]] == "kafka-data"
    assert "test" in kafka["healthcheck"]


def test_every_ledger_service_reaches_an_advertised_listener(services: dict[str, Any]) -> None:
    env = services["kafka"]["environment"]
    advertised = dict(reversed(listener.split("://", 1))
                      for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    bound = dict(listener.split("://", 1) for listener in env["KAFKA_LISTENERS"].split(","))
    for name in LEDGER_SERVICES:
        bootstrap = services[name]["environment"]["LEDGER_BOOTSTRAP"]
        assert bootstrap.split(":")[0] == "kafka", name  # the service, not localhost
        listener = advertised[bootstrap]
        host = bound[listener].rsplit(":", 1)[0]
        assert host in ("", "0.0.0.0"), f"{listener} binds {host}: other containers cannot reach it"


def test_kafka_and_the_host_listener_the_tests_use() -> None:
    kafka = containers.compose_services()["kafka"]
    env = containers.kafka_environment(kafka, 18092)
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092,HOST://127.0.0.1:18092"
    port = containers.host_listener_port(kafka)
    assert f"HOST://:{port}" in env["KAFKA_LISTENERS"].split(",")
    assert not containers.docker_available(docker=str(ROOT / "no-such-docker"))


def test_postgres_keeps_its_data_and_its_password_out_of_the_file(
    services: dict[str, Any], compose: dict[str, Any]
) -> None:
    pg = services["postgres"]
    assert named_volumes(pg, compose)["/var/lib/postgresql/data"] == "pgdata"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert pg["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "POSTGRES_HOST_AUTH_METHOD" not in pg["environment"]


def test_topics_are_made_once_the_broker_is_healthy(services: dict[str, Any]) -> None:
    topics = services["topics"]
    assert ledger_argv(topics) == ["topics", "create"]
    assert topics["restart"] == "no"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_two_processors_with_stable_ids_own_state_and_the_credit_key(
    services: dict[str, Any], compose: dict[str, Any]
) -> None:
    state_dir = runtime_env(DOCKERFILE.read_text())["LEDGER_STATE_DIR"]
    serves = {n: s for n, s in services.items() if ledger_argv(s)[:1] == ["serve"]}
    assert len(serves) == 2
    ids = {option(ledger_argv(s), "--instance-id") for s in serves.values()}
    volumes = {named_volumes(s, compose)[state_dir] for s in serves.values()}
    assert len(ids) == 2 and len(volumes) == 2
    for name, serve in serves.items():
        assert option(ledger_argv(serve), "--metrics-host") == "0.0.0.0", name
        assert serve["environment"]["LEDGER_CREDIT_KEY"].startswith("${LEDGER_CREDIT_KEY:?")
        assert serve["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_the_projector_writes_to_the_stack_postgres(services: dict[str, Any]) -> None:
    project = services["project"]
    assert ledger_argv(project)[0] == "project"
    assert re.fullmatch(r"postgresql\+psycopg://ledger:\$\{POSTGRES_PASSWORD[^}]*\}@postgres:5432"
                        r"/ledger", project["environment"]["LEDGER_STORE"])
    assert project["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert project["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_one_shot_services_are_awaited_by_a_long_running_one(services: dict[str, Any]) -> None:
    """`docker compose up --wait` takes a one-shot's exit for a failure unless a running
    service waits for it to complete."""
    started = {n: s for n, s in services.items() if not s.get("profiles")}
    for name in (n for n, s in started.items() if s.get("restart") == "no"):
        assert any(s.get("depends_on", {}).get(name, {}).get("condition")
                   == "service_completed_successfully" for s in started.values()), name


def test_every_volume_is_declared_and_used(compose: dict[str, Any]) -> None:
    used = {v for s in compose["services"].values()
            for v in named_volumes(s, compose, strict=False).values()}
    assert used == set(compose["volumes"])


def test_ledger_services_are_probed_on_their_metrics_port(services: dict[str, Any]) -> None:
    for name in PROBED:
        argv = ledger_argv(services[name])
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name  # the slim image has no curl
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/readyz|/healthz)", test[3])
        assert url and url.group(1) == option(argv, "--metrics-port"), name


@pytest.mark.parametrize("status,healthy", [(200, True), (503, False)])
def test_the_probe_fails_on_anything_but_ok(services: dict[str, Any], status: int,
                                           healthy: bool) -> None:
    code = services["serve-a"]["healthcheck"]["test"][3]
    with answering(status) as port:
        done = subprocess.run([sys.executable, "-c", code.replace(":9464/", f":{port}/")],
                              capture_output=True, timeout=30)
    assert (done.returncode == 0) is healthy, done.stderr[-500:]


def named_volumes(service: dict[str, Any], compose: dict[str, Any],
                  strict: bool = True) -> dict[str, str]:
    """Mount path -> named volume of the service's volumes (bind mounts left out)."""
    out = {}
    for spec in service.get("volumes", []):
        source, target = str(spec).split(":")[:2]
        if "/" not in source and not source.startswith("."):
            assert not strict or source in compose["volumes"], source
            out[target] = source
    return out


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class answering:
    """A local HTTP server answering every GET with `status`; yields its port."""

    def __init__(self, status: int) -> None:
        handler = type("Handler", (_Answer,), {"status": status})
        self.server = http.server.HTTPServer(("127.0.0.1", 0), handler)

    def __enter__(self) -> int:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return int(self.server.server_address[1])

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
