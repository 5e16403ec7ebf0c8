"""Auth mode of the dev stack without a broker: listeners, client settings, secrets, certs."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from devstack import ProcessInfo, StackInfo, auth
from devstack import kafka as dkafka
from ledger.errors import UsageError
from ledger.kafka import _security_hint
from ledger.settings import read_kafka_config

CREDS = auth.Credentials("admin-pw-123", "broker-pw-456")


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def _auth_props(tmp_path: Path, brokers: int = 1, node: int = 1) -> dict[str, str]:
    spec = dkafka.ClusterSpec(brokers, 20092, auth=True)
    security = auth.Security(auth.AuthFiles(tmp_path), CREDS)
    return _props(dkafka.server_properties(spec, node, tmp_path / "data", security))


def test_every_client_listener_authenticates(tmp_path: Path) -> None:
    props = _auth_props(tmp_path)
    protocols = dict(x.split(":") for x in props["listener.security.protocol.map"].split(","))
    listeners = props["listeners"].split(",")
    assert listeners == ["SASL_PLAINTEXT://127.0.0.1:20092", "CONTROLLER://127.0.0.1:30092",
                         "SASL_SSL://127.0.0.1:20096"]
    assert {name: protocols[name] for name in protocols if name != "CONTROLLER"} == {
        "SASL_PLAINTEXT": "SASL_PLAINTEXT", "SASL_SSL": "SASL_SSL"}
    advertised = props["advertised.listeners"]
    assert "CONTROLLER" not in advertised and "30092" not in advertised
    assert advertised.split(",") == [listeners[0], listeners[2]]
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-256"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-256"


def test_brokers_log_in_as_broker_and_serve_pem_stores(tmp_path: Path) -> None:
    props = _auth_props(tmp_path, brokers=3, node=2)
    inter = props["listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config"]
    assert 'username="broker"' in inter and 'password="broker-pw-456"' in inter
    assert "password" not in props["listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config"]
    assert props["listener.name.sasl_ssl.ssl.keystore.type"] == "PEM"
    assert props["listener.name.sasl_ssl.ssl.truststore.type"] == "PEM"
    assert props["listener.name.sasl_ssl.ssl.keystore.location"] == str(
        tmp_path / "auth" / "broker.pem")
    assert props["listeners"].startswith("SASL_PLAINTEXT://127.0.0.1:20093,")
    assert props["listeners"].endswith(",SASL_SSL://127.0.0.1:20097")
    assert "admin-pw-123" not in str(props)  # clients' password is not the brokers' business


def test_without_auth_the_plaintext_listener_is_unchanged(tmp_path: Path) -> None:
    spec = dkafka.ClusterSpec(1, 9092)
    props = _props(dkafka.server_properties(spec, 1, tmp_path))
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:19092"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert not [k for k in props if "sasl" in k or "ssl" in k]
    assert spec.node_ports(1) == [9092, 19092]
    with pytest.raises(ValueError):
        dkafka.server_properties(dkafka.ClusterSpec(1, 9092, auth=True), 1, tmp_path)


def test_client_settings_parse_back(tmp_path: Path) -> None:
    files = auth.AuthFiles(tmp_path)
    auth.write_client_configs(files, CREDS)
    plain = read_kafka_config(files.client_config)
    assert plain == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
                     "sasl.username": "admin", "sasl.password": "admin-pw-123"}
    tls = read_kafka_config(files.tls_client_config)
    assert tls == {**plain, "security.protocol": "SASL_SSL", "ssl.ca.location": str(files.ca)}
    for path in (files.client_config, files.tls_client_config):
        assert path.stat().st_mode & 0o777 == 0o600


def test_scram_users_go_to_the_storage_tool_as_an_args_file() -> None:
    lines = auth.scram_format_args(CREDS).splitlines()
    assert lines == ["--add-scram", "SCRAM-SHA-256=[name=admin,password=admin-pw-123]",
                     "--add-scram", "SCRAM-SHA-256=[name=broker,password=broker-pw-456]"]


def test_passwords_stay_out_of_reprs() -> None:
    security = auth.Security(auth.AuthFiles(Path("/x")), CREDS)
    for shown in (repr(CREDS), str(CREDS), repr(security)):
        assert "pw-" not in shown


def test_private_files_are_0600_even_when_they_existed(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret"
    path.parent.mkdir()
    path.write_text("old")
    path.chmod(0o644)
    auth.write_private(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o600


def test_credentials_are_made_once_and_never_for_data_formatted_without(tmp_path: Path) -> None:
    files = auth.AuthFiles(tmp_path / "fresh")
    first = auth.ensure_credentials(files, formatted=False)
    assert len(first.admin_password) >= 24 and first.admin_password != first.broker_password
    assert auth.ensure_credentials(files, formatted=True) == first  # kept across restarts
    assert files.credentials.stat().st_mode & 0o777 == 0o600
    with pytest.raises(UsageError, match=r"without --auth.*dev down --wipe"):
        auth.ensure_credentials(auth.AuthFiles(tmp_path / "plain"), formatted=True)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_certificates_for_loopback_signed_by_a_throwaway_ca(tmp_path: Path) -> None:
    files = auth.AuthFiles(tmp_path)
    auth.ensure_tls(files)
    assert sorted(p.name for p in files.root.iterdir()) == ["broker.pem", "ca.pem"]  # no CA key
    assert files.keystore.stat().st_mode & 0o777 == 0o600
    store = files.keystore.read_text()
    assert store.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, as Kafka's PEM store wants
    assert store.count("BEGIN CERTIFICATE") == 2  # broker certificate, then the CA
    cert = tmp_path / "broker.crt"
    cert.write_text(store[store.index("-----BEGIN CERTIFICATE-----"):])
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(files.ca), str(cert)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                           str(cert)], capture_output=True, text=True).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    before = files.keystore.read_text()
    auth.ensure_tls(files)
    assert files.keystore.read_text() == before  # made once


def test_describe_names_each_bootstrap_with_its_client_settings(tmp_path: Path) -> None:
    info = StackInfo(brokers=1, bootstrap="127.0.0.1:9092",
                     client_config=tmp_path / "client-sasl.properties",
                     tls_bootstrap="127.0.0.1:9096",
                     tls_config=tmp_path / "client-sasl-ssl.properties",
                     processes=[ProcessInfo("kafka-1", 1, 9092, True, tmp_path / "log")])
    lines = info.describe()
    assert lines[0].startswith("kafka bootstrap: 127.0.0.1:9092 ")
    assert "SASL_PLAINTEXT" in lines[0] and str(info.client_config) in lines[0]
    assert lines[1].startswith("kafka TLS bootstrap: 127.0.0.1:9096 ")
    assert "SASL_SSL" in lines[1] and str(info.tls_config) in lines[1]


def test_a_listener_that_drops_us_gets_a_security_hint() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert "--kafka-config" in _security_hint(f"127.0.0.1:{port}")
    assert _security_hint(f"127.0.0.1:{port}") == ""  # nothing listens: no hint
    assert _security_hint("not-an-address") == ""
