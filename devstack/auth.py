"""Authentication for the dev stack (`ledger dev up --auth`): SCRAM users, a throwaway CA.

In auth mode every listener a client is told about asks for a SCRAM-SHA-256 login:
SASL_PLAINTEXT on the broker port (also the brokers' own listener, where they log in as
``broker``) and SASL_SSL on broker port + 4, with a certificate for 127.0.0.1/localhost
signed by a CA made here. Only the KRaft controller listener stays plaintext: it is bound
to loopback and never advertised. Everything lives in ``<cluster>/auth`` with secrets in
mode 0600 files; the CA's private key is deleted once the broker certificate is signed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ledger.errors import InfrastructureError, UsageError

ADMIN_USER = "admin"  # what clients log in as
BROKER_USER = "broker"  # what brokers log in as to each other
MECHANISM = "SCRAM-SHA-256"
PLAIN_LISTENER = "SASL_PLAINTEXT"  # listener names = their security protocols: no surprise
TLS_LISTENER = "SASL_SSL"
CERT_DAYS = 825
OPENSSL_TIMEOUT_S = 60.0
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required"

# One config for the CA and the broker certificate, so the system's openssl.cnf (which may
# add or lack extensions) does not matter.
OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = points-ledger dev CA
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[broker_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Credentials:
    """The SCRAM passwords of one cluster (never in repr: settings and logs show it)."""

    admin_password: str = field(repr=False)
    broker_password: str = field(repr=False)


@dataclass(frozen=True)
class AuthFiles:
    """Where one cluster's credentials, certificates and client settings live."""

    cluster: Path

    @property
    def root(self) -> Path:
        return self.cluster / "auth"

    @property
    def credentials(self) -> Path:
        return self.root / "scram.json"

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    @property
    def keystore(self) -> Path:
        """The broker's PEM key store: private key, then certificate chain (mode 0600)."""
        return self.root / "broker.pem"

    @property
    def format_args(self) -> Path:
        """StorageTool arguments with the passwords, so they stay out of `ps` output."""
        return self.root / "format-scram.args"

    @property
    def client_config(self) -> Path:
        return self.cluster / "client-sasl.properties"

    @property
    def tls_client_config(self) -> Path:
        return self.cluster / "client-sasl-ssl.properties"


@dataclass(frozen=True)
class Security:
    """What a broker of an auth-mode cluster needs: its files and the passwords."""

    files: AuthFiles
    creds: Credentials


# --- pure configuration ------------------------------------------------------------------------


def jaas(user: str | None = None, password: str | None = None) -> str:
    """A SCRAM JAAS entry; with a user it is also what the broker logs in with."""
    if user is None or password is None:
        return f"{SCRAM_LOGIN};"
    return f'{SCRAM_LOGIN} username="{user}" password="{password}";'


def listener_props(
    port: int, tls_port: int, controller_port: int, security: Security
) -> dict[str, str]:
    """Broker settings of auth mode: which listeners exist and how each authenticates."""
    creds, files = security.creds, security.files
    plain, tls = PLAIN_LISTENER.lower(), TLS_LISTENER.lower()
    mech = MECHANISM.lower()
    return {
        "listeners": f"{PLAIN_LISTENER}://127.0.0.1:{port},"
        f"CONTROLLER://127.0.0.1:{controller_port},{TLS_LISTENER}://127.0.0.1:{tls_port}",
        # Clients learn only these two; the controller listener is never handed out.
        "advertised.listeners": f"{PLAIN_LISTENER}://127.0.0.1:{port},"
        f"{TLS_LISTENER}://127.0.0.1:{tls_port}",
        "listener.security.protocol.map": f"{PLAIN_LISTENER}:SASL_PLAINTEXT,"
        f"CONTROLLER:PLAINTEXT,{TLS_LISTENER}:SASL_SSL",
        "inter.broker.listener.name": PLAIN_LISTENER,
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        f"listener.name.{plain}.{mech}.sasl.jaas.config": jaas(
            BROKER_USER, creds.broker_password),
        f"listener.name.{tls}.{mech}.sasl.jaas.config": jaas(),
        f"listener.name.{tls}.ssl.keystore.type": "PEM",
        f"listener.name.{tls}.ssl.keystore.location": str(files.keystore),
        f"listener.name.{tls}.ssl.truststore.type": "PEM",
        f"listener.name.{tls}.ssl.truststore.location": str(files.ca),
    }


def client_props(creds: Credentials, ca: Path | None = None) -> dict[str, str]:
    """librdkafka settings to log in as the admin user; with a CA, over TLS."""
    props = {
        "security.protocol": "SASL_SSL" if ca else "SASL_PLAINTEXT",
        "sasl.mechanism": MECHANISM,
        "sasl.username": ADMIN_USER,
        "sasl.password": creds.admin_password,
    }
    if ca:
        props["ssl.ca.location"] = str(ca)
    return props


def properties_text(props: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in props.items())


def scram_format_args(creds: Credentials) -> str:
    """StorageTool `--add-scram` arguments, one token a line (its @file syntax)."""
    users = ((ADMIN_USER, creds.admin_password), (BROKER_USER, creds.broker_password))
    return "".join(f"--add-scram\n{MECHANISM}=[name={u},password={p}]\n" for u, p in users)


# --- files ----------------------------------------------------------------------------------


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (also when it existed with wider rights)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)


def load_credentials(files: AuthFiles) -> Credentials | None:
    try:
        raw = json.loads(files.credentials.read_text())
        return Credentials(str(raw["admin_password"]), str(raw["broker_password"]))
    except (OSError, ValueError, KeyError):
        return None


def ensure_credentials(files: AuthFiles, formatted: bool) -> Credentials:
    """The cluster's SCRAM passwords, made once; refuse data formatted without them."""
    found = load_credentials(files)
    if found:
        return found
    if formatted:
        # The users are written into the metadata log at format time only.
        raise UsageError(f"the Kafka data in {files.cluster} was created without --auth; "
                         "wipe it first with `ledger dev down --wipe`")
    creds = Credentials(secrets.token_urlsafe(24), secrets.token_urlsafe(24))
    doc = {"admin_password": creds.admin_password, "broker_password": creds.broker_password}
    write_private(files.credentials, json.dumps(doc) + "\n")
    return creds


def write_client_configs(files: AuthFiles, creds: Credentials) -> None:
    write_private(files.client_config, properties_text(client_props(creds)))
    write_private(files.tls_client_config, properties_text(client_props(creds, files.ca)))


def prepare(files: AuthFiles, formatted: bool) -> Security:
    """Credentials, certificates and client settings for auth mode (idempotent)."""
    creds = ensure_credentials(files, formatted)
    ensure_tls(files)
    write_client_configs(files, creds)
    return Security(files, creds)


# --- certificates ---------------------------------------------------------------------------


def ensure_tls(files: AuthFiles) -> None:
    """A CA and a broker certificate for 127.0.0.1/localhost, made once with openssl."""
    if files.ca.is_file() and files.keystore.is_file():
        return
    files.root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tls.", dir=files.root))  # 0700: keys stay private
    try:
        make_certificates(work)
        write_private(files.keystore, "".join(
            (work / name).read_text() for name in ("broker.key", "broker.crt", "ca.pem")))
        shutil.copyfile(work / "ca.pem", files.ca)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the CA's key goes: nothing else gets signed


def make_certificates(work: Path) -> None:
    """ca.key/ca.pem and broker.key/broker.crt (EC P-256, PKCS#8 keys) in work."""
    (work / "openssl.cnf").write_text(OPENSSL_CNF)
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    days = ["-days", str(CERT_DAYS)]
    _openssl(work, ["req", "-x509", *newkey, "-keyout", "ca.key", "-out", "ca.pem", *days,
                    "-config", "openssl.cnf", "-extensions", "ca_ext"])
    _openssl(work, ["req", "-new", *newkey, "-keyout", "broker.key", "-out", "broker.csr",
                    "-subj", "/CN=localhost", "-config", "openssl.cnf"])
    _openssl(work, ["x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                    "-set_serial", str(secrets.randbits(63)), *days, "-extfile", "openssl.cnf",
                    "-extensions", "broker_ext", "-out", "broker.crt"])


def _openssl(work: Path, args: list[str]) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise InfrastructureError(
            "openssl not found (needed for the TLS listener of --auth): "
            "install it with `apt-get install -y openssl`")
    try:
        done = subprocess.run([exe, *args], cwd=work, capture_output=True, text=True,
                              timeout=OPENSSL_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise InfrastructureError(f"openssl {args[0]} hung for {OPENSSL_TIMEOUT_S:.0f} s") from e
    if done.returncode != 0:
        raise InfrastructureError(f"openssl {' '.join(args[:2])} failed:\n{done.stderr[-1500:]}")
