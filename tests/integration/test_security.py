"""SASL/SCRAM and TLS through --kafka-config, against a private broker started with --auth.

One one-broker dev stack (`devstack.up(auth=True)`) runs in a temporary home on free ports
for the whole module. It has no plaintext client listener: SASL_PLAINTEXT on its broker
port and SASL_SSL (certificate from the stack's throwaway CA) on broker port + 4, each with
a generated client-settings file. Clients with those settings do a full round trip; without
credentials, with a wrong password or without the right CA they fail within seconds (exit
3, one error line saying why) and never print a password, even at -vv with librdkafka's own
debug logging switched on.

(`ledger query` cannot write: covered with the read path's tests.)
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

import devstack
from devstack import auth as dauth
from devstack import kafka as dkafka
from ledger.client import LedgerClient
from ledger.errors import InfrastructureError, UsageError
from ledger.settings import Settings, read_kafka_config
from tests.integration.stacks import (
    AUTH_CLUSTER_KAFKA,
    AUTH_KAFKA,
    JARS,
    ledger_argv,
    require_java,
    spawn,
    stop,
    wait_for_line,
)

pytestmark = pytest.mark.integration

REFUSED_S = 15  # a refused client must give up within this (it takes 1-3 s here)


@dataclass(frozen=True)
class Listener:
    name: str
    bootstrap: str
    config: Path  # the generated client settings, with the real password


@dataclass(frozen=True)
class AuthStack:
    home: Path
    base_port: int
    plain: Listener  # SASL_PLAINTEXT
    tls: Listener  # SASL_SSL
    password: str
    wrong_config: Path  # SASL_PLAINTEXT with a wrong password and librdkafka debug logging
    wrong_password: str

    @property
    def listeners(self) -> list[Listener]:
        return [self.plain, self.tls]


def _wrong_password_config(home: Path, config: Path, password: str, wrong: str) -> Path:
    path = home / "wrong-sasl.properties"
    path.write_text(config.read_text().replace(password, wrong)
                    + "debug=security,broker,protocol,conf\n")
    return path


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    require_java()
    home = tmp_path_factory.mktemp("authstack")
    base = AUTH_KAFKA.pick()
    try:
        started = time.monotonic()
        info = devstack.up(home, brokers=1, auth=True, base_port=base, jars_dir=JARS)
        print(f"auth stack up in {time.monotonic() - started:.1f} s")
        assert info.bootstrap and info.client_config, info.describe()
        assert info.tls_bootstrap and info.tls_config, info.describe()
        password = read_kafka_config(info.client_config)["sasl.password"]
        assert len(password) >= 16
        wrong_password = f"Wr0ng-{uuid.uuid4().hex}"
        yield AuthStack(
            home, base, Listener("SASL_PLAINTEXT", info.bootstrap, info.client_config),
            Listener("SASL_SSL", info.tls_bootstrap, info.tls_config), password,
            _wrong_password_config(home, info.client_config, password, wrong_password),
            wrong_password)
    finally:
        devstack.down(home, wipe=True)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    seconds: float


def run(argv: list[str], timeout: float = 90, env: dict[str, str] | None = None) -> Run:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[2],
                          env={**os.environ, **(env or {})})
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def run_all(commands: dict[str, list[str]]) -> dict[str, Run]:
    with ThreadPoolExecutor(len(commands)) as pool:
        return dict(zip(commands, pool.map(run, commands.values()), strict=True))


def _one_error_line(r: Run) -> str:
    lines = [ln for ln in r.err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, r.err[-3000:]
    return lines[0]


def _assert_refused(runs: dict[str, Run], bootstrap: str, why: str) -> None:
    """Exit 3 within seconds, one line naming what was tried and why, nothing else."""
    for name, r in runs.items():
        assert r.code == 3, (name, r.code, r.err[-2000:])
        assert r.seconds < REFUSED_S, (name, r.seconds)
        assert "Traceback" not in r.err, name
        line = _one_error_line(r)
        assert bootstrap in line and why in line, (name, line)
        assert r.err.strip() == line, (name, r.err)  # without -v: that one line only


@pytest.mark.parametrize("which", ["plain", "tls"])
def test_topics_and_waited_commands_through_each_listener(
    auth: AuthStack, which: str, tmp_path: Path
) -> None:
    listener: Listener = getattr(auth, which)
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    cli = ledger_argv(listener.bootstrap, prefix, "--kafka-config", str(listener.config))
    created = run([*cli, "topics", "create"])
    assert created.code == 0, created.err
    assert f"{prefix}.events" in created.out + created.err
    log = tmp_path / "serve.log"
    serve = spawn([*cli, "-v", "serve", "--instance-id", which], log)
    try:
        wait_for_line(log, "owns partitions [0, 1, 2]")
        opened = run([*cli, "account", "open", "user:alice", "--grant", "5", "--wait",
                      "--json", "--timeout", "30"])
        assert opened.code == 0, opened.err
        assert json.loads(opened.out)["status"] == "accepted"
        earned = run([*cli, "earn", "user:alice", "2", "--wait", "--json", "--timeout", "30"])
        assert json.loads(earned.out)["status"] == "accepted", earned.err
        spent = run([*cli, "spend", "user:alice", "9", "--wait", "--json", "--timeout", "30"])
        assert spent.code == 1, spent.err
        assert json.loads(spent.out)["reason"] == "insufficient_points"
    finally:
        assert stop(serve) == 0, log.read_text()[-2000:]
    assert auth.password not in log.read_text()


def test_only_authenticating_listeners_are_advertised(auth: AuthStack) -> None:
    spec = dkafka.ClusterSpec(1, auth.base_port, auth=True)
    for listener in auth.listeners:
        admin = AdminClient({"bootstrap.servers": listener.bootstrap,
                             **read_kafka_config(listener.config)})
        brokers = admin.list_topics(timeout=10).brokers
        assert [(str(b.host), b.port) for b in brokers.values()] == [
            ("127.0.0.1", int(listener.bootstrap.rsplit(":", 1)[1]))]
    props = read_kafka_config(dkafka.node_dir(auth.home, 1, 1) / "server.properties")
    assert "CONTROLLER" not in props["advertised.listeners"]
    assert str(spec.controller_port(1)) not in props["advertised.listeners"]
    protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
    bound = [entry.split("://")[0] for entry in props["listeners"].split(",")]
    assert {protocols[name] for name in bound if name != "CONTROLLER"} == {
        "SASL_PLAINTEXT", "SASL_SSL"}
    assert all("://127.0.0.1:" in entry for entry in props["listeners"].split(","))


def test_secrets_are_private_and_a_plain_up_is_refused(auth: AuthStack) -> None:
    files = dkafka.auth_files(auth.home, 1)
    private = [files.client_config, files.tls_client_config, files.keystore, files.credentials,
               dkafka.node_dir(auth.home, 1, 1) / "server.properties"]
    for path in private:
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert not files.format_args.exists()  # the passwords given to the storage tool
    assert sorted(p.name for p in files.root.iterdir()) == ["broker.pem", "ca.pem",
                                                           "scram.json"]  # no CA key
    before = devstack.status(auth.home)
    with pytest.raises(UsageError, match="auth on"):
        devstack.up(auth.home, brokers=1, base_port=auth.base_port, jars_dir=JARS)
    assert devstack.status(auth.home).processes == before.processes  # nothing restarted


def test_a_client_without_credentials_is_refused_on_every_client_port(
    auth: AuthStack, tmp_path: Path
) -> None:
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    # TLS with the right CA but no login: the SASL_SSL listener still refuses it.
    tls_only = tmp_path / "tls-only.properties"
    ca = dkafka.auth_files(auth.home, 1).ca
    tls_only.write_text(f"security.protocol=SSL\nssl.ca.location={ca}\n")
    cases: list[tuple[str, str, list[str]]] = [
        ("SASL_PLAINTEXT port", auth.plain.bootstrap, []),
        ("SASL_SSL port", auth.tls.bootstrap, []),
        ("SASL_SSL port, TLS only", auth.tls.bootstrap, ["--kafka-config", str(tls_only)]),
    ]
    commands: dict[str, list[str]] = {}
    for label, bootstrap, extra in cases:
        cli = ledger_argv(bootstrap, prefix, *extra)
        commands[f"{label}: topics create"] = [*cli, "topics", "create"]
        commands[f"{label}: earn --wait"] = [*cli, "earn", "user:alice", "5", "--wait",
                                             "--timeout", "5"]
        commands[f"{label}: serve"] = [*cli, "serve", "--instance-id", "nocreds"]
    runs = run_all(commands)
    for label, bootstrap, _ in cases:
        mine = {name: r for name, r in runs.items() if name.rsplit(":", 1)[0] == label}
        assert len(mine) == 3
        _assert_refused(mine, bootstrap, "may require SASL or TLS")
    for listener in auth.listeners:  # the Python client gives up the same way
        started = time.monotonic()
        with pytest.raises(InfrastructureError, match=r"cannot reach Kafka.*SASL or TLS"):
            LedgerClient(Settings(bootstrap=listener.bootstrap, topic_prefix=prefix))
        assert time.monotonic() - started < REFUSED_S


def test_tls_without_the_right_ca_is_refused(auth: AuthStack, tmp_path: Path) -> None:
    settings = read_kafka_config(auth.tls.config)
    other = dauth.AuthFiles(tmp_path / "other")
    dauth.ensure_tls(other)  # a CA that did not sign the broker's certificate
    configs = {
        "no CA": {k: v for k, v in settings.items() if k != "ssl.ca.location"},
        "wrong CA": {**settings, "ssl.ca.location": str(other.ca)},
    }
    commands: dict[str, list[str]] = {}
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    for name, props in configs.items():
        path = tmp_path / f"{name.replace(' ', '-')}.properties"
        dauth.write_private(path, dauth.properties_text(props))
        cli = ledger_argv(auth.tls.bootstrap, prefix, "--kafka-config", str(path))
        commands[f"{name}: topics create"] = [*cli, "topics", "create"]
        commands[f"{name}: earn --wait"] = [*cli, "earn", "user:alice", "5", "--wait",
                                            "--timeout", "5"]
    runs = run_all(commands)
    _assert_refused(runs, auth.tls.bootstrap, "certificate verify failed")
    for r in runs.values():
        assert auth.password not in r.out + r.err


def test_passwords_never_appear_in_output(auth: AuthStack) -> None:
    """Wrong password at -vv (with librdkafka debug contexts on): refused, not printed."""
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    wrong = ledger_argv(auth.plain.bootstrap, prefix, "--kafka-config", str(auth.wrong_config),
                        "-vv")
    right = {listener.name: ledger_argv(listener.bootstrap, f"{prefix}{listener.name[-3:]}",
                                        "--kafka-config", str(listener.config), "-vv")
             for listener in auth.listeners}
    commands = {
        "topics create": [*wrong, "topics", "create"],
        "earn --wait": [*wrong, "earn", "user:alice", "5", "--wait", "--timeout", "5"],
        "serve": [*wrong, "serve", "--instance-id", "wrongpw"],
        "json logs": [*wrong, "--log-format", "json", "topics", "describe"],
        "right password": [*right["SASL_PLAINTEXT"], "topics", "create"],
        "right password, TLS": [*right["SASL_SSL"], "topics", "create"],
    }
    runs = run_all(commands)
    for name, r in runs.items():
        everything = r.out + r.err
        assert auth.wrong_password not in everything, name
        assert auth.password not in everything, name
        assert "Traceback" not in everything, name
        assert r.seconds < REFUSED_S * 2, (name, r.seconds)
        if not name.startswith("right password"):
            assert r.code == 3, (name, r.code, r.err[-2000:])
            line = _one_error_line(r)
            assert auth.plain.bootstrap in line, line
            assert "Authentication failed" in line, line  # says why, not just "unreachable"
            assert r.seconds < REFUSED_S, (name, r.seconds)  # a refused login fails fast
    assert runs["right password"].code == 0, runs["right password"].err[-2000:]
    assert runs["right password, TLS"].code == 0, runs["right password, TLS"].err[-2000:]
    # librdkafka's debug lines did reach the output (so the check above is not vacuous).
    assert "SASL authentication error" in runs["topics create"].err
    assert len(runs["topics create"].err.splitlines()) > 5


def test_dev_status_shows_where_the_settings_are_not_what_they_hold(auth: AuthStack) -> None:
    shown = run([*ledger_argv(auth.plain.bootstrap, "x"), "dev", "status"],
                env={"LEDGER_HOME": str(auth.home)})
    assert shown.code == 0, shown.err
    for listener in auth.listeners:
        assert listener.bootstrap in shown.out and str(listener.config) in shown.out
    assert auth.password not in shown.out + shown.err


def test_serve_without_a_credit_key_refuses_to_start_in_one_line(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the dev stack (a reachable broker, a home with no stack) there is no key to
    fall back on: exit 2 before connecting, one line saying what to set and why. Keys that
    are only accepted (LEDGER_CREDIT_KEYS) never sign, so they do not count."""
    monkeypatch.delenv("LEDGER_CREDIT_KEY", raising=False)
    argv = [*ledger_argv(bootstrap, f"sec{uuid.uuid4().hex[:8]}"), "serve", "--instance-id", "k"]
    for env in ({}, {"LEDGER_CREDIT_KEYS": "hunter2-old"}):
        r = run(argv, timeout=60, env={"LEDGER_HOME": str(tmp_path), **env})
        assert r.code == 2, (r.code, r.err[-2000:])
        assert r.seconds < REFUSED_S, r.seconds
        line = _one_error_line(r)
        assert r.err.strip() == line and r.out == "" and "Traceback" not in r.err
        assert line.startswith("error: LEDGER_CREDIT_KEY is not set: "), line
        assert "sign" in line and "every processor" in line, line  # why, and what to set
        assert "hunter2" not in r.err


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


@pytest.mark.slow
def test_three_brokers_with_auth(tmp_path: Path) -> None:
    """Replication and transactions between brokers that log in to each other."""
    require_java()
    home = tmp_path / "auth3"
    try:
        info = devstack.up(home, brokers=3, auth=True, base_port=AUTH_CLUSTER_KAFKA.pick(),
                           jars_dir=JARS)
        assert info.tls_bootstrap and info.tls_config and info.bootstrap and info.client_config
        prefix = f"sec{uuid.uuid4().hex[:8]}"
        tls = ledger_argv(info.tls_bootstrap, prefix, "--kafka-config", str(info.tls_config))
        plain = ledger_argv(info.bootstrap, prefix, "--kafka-config", str(info.client_config))
        assert run([*tls, "topics", "create"]).code == 0
        log = tmp_path / "serve.log"
        serve = spawn([*tls, "-v", "serve", "--instance-id", "three"], log)
        try:
            wait_for_line(log, "owns partitions [0, 1, 2]")
            opened = run([*plain, "account", "open", "user:bob", "--grant", "7", "--wait",
                          "--json", "--timeout", "60"])
            assert json.loads(opened.out)["status"] == "accepted", opened.err
        finally:
            assert stop(serve) == 0, log.read_text()[-2000:]
    finally:
        devstack.down(home, wipe=True)
