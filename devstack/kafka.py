"""Apache Kafka for the dev stack: jar fetch with Maven, KRaft format, broker processes."""

from __future__ import annotations

import base64
import fcntl
import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from devstack import auth, proc
from ledger.errors import InfrastructureError

KAFKA_VERSION = "4.1.1"
POM = Path(__file__).resolve().parent / "pom.xml"  # package data: in every install
MAIN_CLASS = "kafka.Kafka"
READY_TIMEOUT_S = 60.0
FETCH_TIMEOUT_S = 900.0
CONTROLLER_OFFSET = 10_000  # controller port = broker port + 10000
TLS_OFFSET = 4  # auth mode's SASL_SSL listener of node n: base_port + 4 + (n - 1), 9096
HEAP = {1: "512m", 3: "384m"}
JVM_OPTS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")

LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""

# The storage tool's own logging goes to its captured output, not to the broker's log.
TOOLS_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = %p %m%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = out
"""


@dataclass(frozen=True)
class ClusterSpec:
    """Shape of one local cluster: n combined broker+controller nodes on loopback."""

    brokers: int
    base_port: int
    auth: bool = False

    @property
    def node_ids(self) -> list[int]:
        return list(range(1, self.brokers + 1))

    def port(self, node_id: int) -> int:
        return self.base_port + node_id - 1

    def controller_port(self, node_id: int) -> int:
        return self.port(node_id) + CONTROLLER_OFFSET

    def tls_port(self, node_id: int) -> int:
        return self.base_port + TLS_OFFSET + node_id - 1

    def node_ports(self, node_id: int) -> list[int]:
        ports = [self.port(node_id), self.controller_port(node_id)]
        return [*ports, self.tls_port(node_id)] if self.auth else ports

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port(n)}" for n in self.node_ids)

    @property
    def tls_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.tls_port(n)}" for n in self.node_ids)


def cluster_dir(home: Path, brokers: int) -> Path:
    return home / f"kafka-{brokers}broker"


def node_dir(home: Path, brokers: int, node_id: int) -> Path:
    return cluster_dir(home, brokers) / f"node-{node_id}"


def pid_file(home: Path, brokers: int, node_id: int) -> Path:
    return node_dir(home, brokers, node_id) / "kafka.pid"


def markers(home: Path, brokers: int, node_id: int) -> list[str]:
    """What a live broker's command line must hold: the main class and its own config."""
    return [MAIN_CLASS, str(node_dir(home, brokers, node_id) / "server.properties")]


def live_broker(home: Path, brokers: int, node_id: int) -> int | None:
    return proc.live_pid(pid_file(home, brokers, node_id), markers(home, brokers, node_id))


def default_jars_dir(home: Path) -> Path:
    return home / f"kafka-{KAFKA_VERSION}" / "lib"


# --- jars -------------------------------------------------------------------------------------


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two `dev up` at once (a test session and a shell) must not fetch into the same dir.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_jars(jars_dir: Path) -> bool:
    """Fetch the broker jars into jars_dir once; True if a fetch happened."""
    if any(jars_dir.glob("kafka_2.13-*.jar")):
        return False
    mvn = _require_tool("mvn", "Maven (mvn)", "maven")
    if not POM.is_file():
        raise InfrastructureError(f"the jar-fetch pom is missing: {POM}")
    with _locked(jars_dir.parent / ".fetch.lock"):
        if any(jars_dir.glob("kafka_2.13-*.jar")):
            return False
        _fetch(mvn, jars_dir)
    return True


def _fetch(mvn: str, jars_dir: Path) -> None:
    work = jars_dir.parent
    shutil.copyfile(POM, work / "pom.xml")
    staging = Path(tempfile.mkdtemp(prefix="lib.", dir=work))
    argv = [mvn, "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise InfrastructureError(f"fetching Kafka jars timed out: {' '.join(argv)}") from e
    if done.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        last = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise InfrastructureError(f"fetching Kafka jars failed: {' '.join(argv)}\n{last}")
    shutil.rmtree(jars_dir, ignore_errors=True)
    staging.rename(jars_dir)  # atomic: a half-fetched lib/ is never seen as complete


def _require_tool(name: str, what: str, package: str) -> str:
    found = shutil.which(name)
    if not found:
        raise InfrastructureError(
            f"{what} not found: install it with `apt-get install -y {package}`")
    return found


# --- configuration and format ------------------------------------------------------------------


def server_properties(
    spec: ClusterSpec, node_id: int, data_dir: Path, security: auth.Security | None = None
) -> str:
    """One node's server.properties; auth mode (``security``) swaps the listeners."""
    if spec.auth != (security is not None):
        raise ValueError("auth mode needs its security settings, and only auth mode")
    voters = ",".join(f"{n}@127.0.0.1:{spec.controller_port(n)}" for n in spec.node_ids)
    rf, isr = (3, 2) if spec.brokers >= 3 else (1, 1)
    port, controller = spec.port(node_id), spec.controller_port(node_id)
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "auto.create.topics.enable": "false",
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(isr),
        "offsets.topic.replication.factor": str(rf),
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(isr),
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(isr),
        "group.initial.rebalance.delay.ms": "0",
    }
    if security is not None:
        props.update(auth.listener_props(port, spec.tls_port(node_id), controller, security))
    return auth.properties_text(props)


def new_cluster_id() -> str:
    """A Kafka Uuid (url-safe base64 of 16 random bytes), as `StorageTool random-uuid` makes."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka rejects ids that look like a CLI flag
            return cid


def cluster_id(home: Path, brokers: int) -> str:
    """The cluster's id, made once and kept in cluster.json so every node shares it."""
    meta = cluster_dir(home, brokers) / "cluster.json"
    if meta.is_file():
        return str(json.loads(meta.read_text())["cluster_id"])
    cid = new_cluster_id()
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"cluster_id": cid, "brokers": brokers}) + "\n")
    return cid


def write_node_config(
    home: Path, spec: ClusterSpec, node_id: int, security: auth.Security | None = None
) -> Path:
    nd = node_dir(home, spec.brokers, node_id)
    nd.mkdir(parents=True, exist_ok=True)
    (nd / "log4j2.properties").write_text(LOG4J2.format(log=nd / "server.log"))
    (nd / "tools-log4j2.properties").write_text(TOOLS_LOG4J2)
    props = nd / "server.properties"
    text = server_properties(spec, node_id, nd / "data", security)
    if security is None:
        props.write_text(text)
    else:  # it holds the brokers' own password
        auth.write_private(props, text)
    return props


def _java(jars_dir: Path, log_config: Path, heap: str | None = None) -> list[str]:
    java = _require_tool("java", "Java", "openjdk-17-jre-headless")
    heap_opts = [f"-Xmx{heap}", *JVM_OPTS] if heap else []
    return [java, *heap_opts, "-cp", str(jars_dir / "*"),
            f"-Dlog4j2.configurationFile={log_config}"]


def formatted(home: Path, brokers: int, node_id: int) -> bool:
    return (node_dir(home, brokers, node_id) / "data" / "meta.properties").is_file()


def format_nodes(
    home: Path, spec: ClusterSpec, jars_dir: Path, security: auth.Security | None = None
) -> None:
    """Format the KRaft storage of every node not yet formatted (in parallel: JVM starts).

    Auth mode also writes the SCRAM users into the metadata log: brokers need theirs
    before any listener of theirs accepts a login.
    """
    todo = [n for n in spec.node_ids if not formatted(home, spec.brokers, n)]
    if not todo:
        return
    scram: list[str] = []
    hidden: list[str] = []
    if security is not None:
        auth.write_private(security.files.format_args,
                           auth.scram_format_args(security.creds))
        scram = [f"@{security.files.format_args}"]
        hidden = [security.creds.admin_password, security.creds.broker_password]
    try:
        _format(home, spec, jars_dir, todo, scram, hidden)
    finally:
        if security is not None:
            security.files.format_args.unlink(missing_ok=True)


def _format(
    home: Path,
    spec: ClusterSpec,
    jars_dir: Path,
    nodes: list[int],
    extra: list[str],
    hidden: list[str],
) -> None:
    cid = cluster_id(home, spec.brokers)
    running: list[tuple[int, subprocess.Popen[str]]] = []
    for n in nodes:
        nd = node_dir(home, spec.brokers, n)
        argv = [*_java(jars_dir, nd / "tools-log4j2.properties"), "kafka.tools.StorageTool",
                "format", "-t", cid, "-c", str(nd / "server.properties"), "--ignore-formatted",
                *extra]
        running.append((n, subprocess.Popen(argv, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, text=True)))
    for n, p in running:
        try:
            out, _ = p.communicate(timeout=120)
        except subprocess.TimeoutExpired as e:
            p.kill()
            raise InfrastructureError(f"KRaft format of node {n} hung for 120 s") from e
        if p.returncode != 0:
            for secret in hidden:  # the tool may echo a bad --add-scram argument
                out = out.replace(secret, "***")
            raise InfrastructureError(f"KRaft format of node {n} failed:\n{out[-2000:]}")


# --- processes -------------------------------------------------------------------------------


def start_node(home: Path, spec: ClusterSpec, node_id: int, jars_dir: Path) -> int:
    """Start one broker as a detached process; return its pid."""
    nd = node_dir(home, spec.brokers, node_id)
    heap = HEAP.get(spec.brokers, "384m")
    argv = [*_java(jars_dir, nd / "log4j2.properties", heap), MAIN_CLASS,
            str(nd / "server.properties")]
    return proc.spawn(argv, nd / "console.log", pid_file(home, spec.brokers, node_id), nd).pid


def _answers(port: int, node_id: int, client: Mapping[str, str]) -> bool:
    """The broker on port serves metadata that lists itself (registered and unfenced)."""
    if not proc.port_open(port):
        return False
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0,
                         "socket.timeout.ms": 2000, **client})
    try:
        md = admin.list_topics(timeout=2)
    except KafkaException:  # while it boots: just not ready yet
        return False
    return node_id in md.brokers


def wait_ready(
    home: Path, spec: ClusterSpec, node_ids: Sequence[int], security: auth.Security | None = None
) -> None:
    """Block until every node answers (logged in, in auth mode), or raise naming its log."""
    client = auth.client_props(security.creds) if security else {}
    for n in node_ids:
        _wait_node(home, spec, n, client)


def _wait_node(home: Path, spec: ClusterSpec, n: int, client: Mapping[str, str]) -> None:
    nd = node_dir(home, spec.brokers, n)

    def failure(reason: str) -> InfrastructureError:
        log = nd / "server.log"
        return InfrastructureError(
            f"Kafka node {n} on 127.0.0.1:{spec.port(n)} did not come up ({reason}); "
            f"log {log}:\n{proc.tail(log)}\n--- {nd / 'console.log'}:\n"
            f"{proc.tail(nd / 'console.log', 5)}")

    proc.wait_until(lambda: _answers(spec.port(n), n, client),
                    lambda: live_broker(home, spec.brokers, n) is not None,
                    READY_TIMEOUT_S, failure)


# --- auth mode ------------------------------------------------------------------------------


def auth_files(home: Path, brokers: int) -> auth.AuthFiles:
    return auth.AuthFiles(cluster_dir(home, brokers))


def prepare_auth(home: Path, spec: ClusterSpec) -> auth.Security | None:
    """Auth mode's passwords, certificates and client settings; None without auth."""
    if not spec.auth:
        return None
    done = any(formatted(home, spec.brokers, n) for n in spec.node_ids)
    return auth.prepare(auth_files(home, spec.brokers), done)
