"""SASL/SCRAM through --kafka-config, against a private broker started with authentication.

A separate one-broker dev stack (`ledger dev up --auth`) runs in a temporary home on free
ports for this module. Clients reach its SASL_PLAINTEXT listener with the generated
client-sasl.properties; without credentials, or with a wrong password, they fail within
bounded time (exit 3, one error line) and never print the password, even at -vv with
librdkafka's own debug logging switched on.

(`ledger query` cannot write: covered with the read path's tests.)
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger import devstack
from ledger.client import LedgerClient
from ledger.errors import InfrastructureError
from ledger.settings import Settings, read_kafka_config
from tests.integration.stacks import (
    JARS,
    free_base,
    ledger_argv,
    require_java,
    spawn,
    stop,
    wait_for_line,
)

pytestmark = pytest.mark.integration

BOUND_S = 40  # every failing command must give up well within this


@dataclass(frozen=True)
class AuthStack:
    home: Path
    sasl_bootstrap: str
    config: Path  # the generated client settings, with the real password
    password: str
    wrong_config: Path  # the same with a wrong password and librdkafka debug logging
    wrong_password: str


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    require_java()
    home = tmp_path_factory.mktemp("authstack")
    try:
        info = devstack.up(home, brokers=1, auth=True, base_port=free_base(20092, 1, True),
                           jars_dir=JARS)
        assert info.sasl_bootstrap and info.sasl_config, info.describe()
        password = read_kafka_config(info.sasl_config)["sasl.password"]
        assert len(password) >= 16
        wrong_password = f"Wr0ng-{uuid.uuid4().hex}"
        wrong = home / "wrong-sasl.properties"
        wrong.write_text(
            info.sasl_config.read_text().replace(password, wrong_password)
            + "debug=security,broker,protocol,conf\n"
        )
        yield AuthStack(home, info.sasl_bootstrap, info.sasl_config, password, wrong,
                        wrong_password)
    finally:
        devstack.down(home, wipe=True)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    seconds: float


def run(argv: list[str], timeout: float = 90) -> Run:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[2])
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def test_topics_and_a_waited_command_through_sasl(auth: AuthStack, tmp_path: Path) -> None:
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    cli = ledger_argv(auth.sasl_bootstrap, prefix, "--kafka-config", str(auth.config))
    created = run([*cli, "topics", "create"])
    assert created.code == 0, created.err
    assert f"{prefix}.events" in created.out + created.err
    log = tmp_path / "serve.log"
    serve = spawn([*cli, "-v", "serve", "--instance-id", "sasl"], log)
    try:
        wait_for_line(log, "owns partitions [0, 1, 2]")
        opened = run([*cli, "account", "open", "user:alice", "--grant", "5", "--wait",
                      "--json", "--timeout", "30"])
        assert opened.code == 0, opened.err
        assert json.loads(opened.out)["status"] == "accepted"
        spent = run([*cli, "spend", "user:alice", "9", "--wait", "--json", "--timeout", "30"])
        assert spent.code == 1, spent.err
        assert json.loads(spent.out)["reason"] == "insufficient_points"
    finally:
        assert stop(serve) == 0, log.read_text()[-2000:]
    assert auth.password not in log.read_text()


def _one_error_line(r: Run) -> str:
    lines = [ln for ln in r.err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, r.err[-3000:]
    return lines[0]


def test_a_client_without_credentials_is_refused_within_bounded_time(auth: AuthStack) -> None:
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    plain = ledger_argv(auth.sasl_bootstrap, prefix)
    commands = {
        "topics create": [*plain, "topics", "create"],
        "earn --wait": [*plain, "earn", "user:alice", "5", "--wait", "--timeout", "5"],
        "serve": [*plain, "serve", "--instance-id", "nocreds"],
    }
    with ThreadPoolExecutor(len(commands)) as pool:
        runs = dict(zip(commands, pool.map(run, commands.values()), strict=True))
    for name, r in runs.items():
        assert r.code == 3, (name, r.code, r.err[-2000:])
        assert r.seconds < BOUND_S, (name, r.seconds)
        assert "Traceback" not in r.err
        line = _one_error_line(r)
        assert auth.sasl_bootstrap in line, line  # names what was tried
        assert r.err.strip() == line, r.err  # without -v: that one line and nothing else
    # The Python client gives up the same way.
    started = time.monotonic()
    with pytest.raises(InfrastructureError, match="cannot reach Kafka"):
        LedgerClient(Settings(bootstrap=auth.sasl_bootstrap, topic_prefix=prefix))
    assert time.monotonic() - started < BOUND_S


def test_passwords_never_appear_in_output(auth: AuthStack) -> None:
    """Wrong password at -vv (with librdkafka debug contexts on): refused, not printed."""
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    wrong = ledger_argv(auth.sasl_bootstrap, prefix, "--kafka-config", str(auth.wrong_config),
                        "-vv")
    right = ledger_argv(auth.sasl_bootstrap, prefix, "--kafka-config", str(auth.config), "-vv")
    commands = {
        "topics create": [*wrong, "topics", "create"],
        "earn --wait": [*wrong, "earn", "user:alice", "5", "--wait", "--timeout", "5"],
        "serve": [*wrong, "serve", "--instance-id", "wrongpw"],
        "json logs": [*wrong, "--log-format", "json", "topics", "describe"],
        "right password": [*right, "topics", "create"],
    }
    with ThreadPoolExecutor(len(commands)) as pool:
        runs = dict(zip(commands, pool.map(run, commands.values()), strict=True))
    for name, r in runs.items():
        everything = r.out + r.err
        assert auth.wrong_password not in everything, name
        assert auth.password not in everything, name
        assert "Traceback" not in everything, name
        assert r.seconds < BOUND_S, (name, r.seconds)
        if name != "right password":
            assert r.code == 3, (name, r.code, r.err[-2000:])
            line = _one_error_line(r)
            assert auth.sasl_bootstrap in line, line
            assert "Authentication failed" in line, line  # says why, not just "unreachable"
            assert r.seconds < 15, (name, r.seconds)  # a refused login fails fast
    assert runs["right password"].code == 0, runs["right password"].err[-2000:]
    # librdkafka's debug lines did reach the output (so the check above is not vacuous).
    assert "SASL authentication error" in runs["topics create"].err
    assert len(runs["topics create"].err.splitlines()) > 5


def test_settings_never_show_secrets() -> None:
    extra = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "admin",
        "sasl.password": "hunter2-sasl",
        "ssl.key.password": "hunter2-key",
        "ssl.keystore.password": "hunter2-store",
        "sasl.oauthbearer.client.secret": "hunter2-oauth",
        "ssl.key.pem": "-----BEGIN PRIVATE KEY-----hunter2-pem",
        "sasl.oauthbearer.token.endpoint.url": "https://idp.example/token",
    }
    settings = Settings(kafka_extra=extra)
    redacted = settings.redacted_kafka_extra()
    assert set(redacted) == set(extra)
    for key, value in extra.items():
        if "hunter2" in value:
            assert redacted[key] == "***", key
    assert redacted["sasl.username"] == "admin"
    assert redacted["security.protocol"] == "SASL_SSL"
    for shown in (repr(settings), str(settings), repr(settings.with_(topic_prefix="x"))):
        assert "hunter2" not in shown
        assert "sasl.username" in shown  # redacted, not dropped
