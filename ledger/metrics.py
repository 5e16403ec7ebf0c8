"""Prometheus metrics, /healthz and /readyz for `serve` and `project` (docs/operations.md).

Every metric is listed once in METRICS; the collectors read the services' own counters
when scraped, so the loops pay nothing per message. The same name means the same thing
in both services; `partition` is always a Kafka partition number of the topic in the
`topic` label.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from confluent_kafka import KafkaException
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ledger.errors import UsageError
from ledger.health import Endpoint, LatencyHistogram, lag_problem
from ledger.kafka import make_admin
from ledger.settings import Settings

# (healthy or ready, the JSON body's other fields)
Check = Callable[[], tuple[bool, dict[str, Any]]]


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as exposed: a counter's ends in _total
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str


def _spec(name: str, kind: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, kind, labels, help)


BATCHES = _spec("ledger_batches_total", "counter",
                "Batches committed: serve's Kafka transactions, project's store transactions.")
BATCH_LATENCY = _spec("ledger_batch_latency_seconds", "histogram",
                      "Time from a batch's records in hand to its commit: serve decides and "
                      "commits the transaction, project builds rows and commits them.")
DEAD_LETTERS = _spec("ledger_dead_letters_total", "counter",
                     "Records sent to the dead-letter topic.")
LAG = _spec("ledger_consumer_lag_records", "gauge",
            "Records behind the end of an input partition.", "topic", "partition")
PROCESSOR_METRICS = (
    _spec("ledger_commands_total", "counter", "Commands consumed."),
    _spec("ledger_commands_accepted_total", "counter", "Commands accepted."),
    _spec("ledger_commands_rejected_total", "counter", "Commands rejected, by reason.",
          "reason"),
    DEAD_LETTERS,
    _spec("ledger_credits_refused_total", "counter",
          "Routed credits refused for their signature (unsigned, tampered, or signed with a "
          "key not held): dead-lettered, never applied."),
    _spec("ledger_transactions_aborted_total", "counter", "Aborted transactions."),
    BATCHES,
    _spec("ledger_producer_restarts_total", "counter",
          "Transactional producers replaced after a stuck or failed transaction."),
    _spec("ledger_commit_retries_total", "counter",
          "Transactional calls repeated after a retriable error (e.g. commit_transaction)."),
    _spec("ledger_resyncs_total", "counter",
          "Re-synchronisations from the committed offsets after a transaction of unknown "
          "outcome or a rebalance mid-fetch."),
    _spec("ledger_consumer_rejoins_total", "counter",
          "Consumers replaced after a fatal error (e.g. fenced after a broker failover)."),
    BATCH_LATENCY,
    LAG,
)
PROJECTOR_METRICS = (
    _spec("ledger_projected_events_total", "counter", "Journal events projected."),
    _spec("ledger_projected_records_total", "counter",
          "Records projected (accounts and events)."),
    BATCHES,
    DEAD_LETTERS,
    _spec("ledger_position_conflicts_total", "counter",
          "Batches dropped because another writer moved the stored positions."),
    BATCH_LATENCY,
    LAG,
)
METRICS = {m.name: m for m in (*PROCESSOR_METRICS, *PROJECTOR_METRICS)}


def _counter(name: str, value: float, by: Mapping[str, float] | None = None) -> Metric:
    spec = METRICS[name]
    if by is None:
        return CounterMetricFamily(name, spec.help, value=value)
    family = CounterMetricFamily(name, spec.help, labels=spec.labels)
    for label, n in sorted(by.items()):
        family.add_metric([label], n)
    return family


def _latency(histogram: LatencyHistogram) -> Metric:
    buckets, total = histogram.cumulative()
    return HistogramMetricFamily(BATCH_LATENCY.name, BATCH_LATENCY.help, buckets=buckets,
                                 sum_value=total)


def _lag(lag: Mapping[tuple[str, int], int]) -> Metric:
    family = GaugeMetricFamily(LAG.name, LAG.help, labels=LAG.labels)
    for (topic, partition), n in sorted(lag.items()):
        family.add_metric([topic, str(partition)], n)
    return family


class ProcessorCollector(Collector):
    def __init__(self, processor: Any) -> None:
        self.p = processor

    def collect(self) -> Iterator[Metric]:
        s = self.p.stats
        yield _counter("ledger_commands_total", s.commands)
        yield _counter("ledger_commands_accepted_total", s.accepted)
        yield _counter("ledger_commands_rejected_total", 0, dict(s.rejected))
        yield _counter(DEAD_LETTERS.name, s.dead_letters)
        yield _counter("ledger_credits_refused_total", s.credits_refused)
        yield _counter("ledger_transactions_aborted_total", s.aborts)
        yield _counter(BATCHES.name, s.batches)
        yield _counter("ledger_producer_restarts_total", s.producer_restarts)
        yield _counter("ledger_commit_retries_total", s.commit_retries)
        yield _counter("ledger_resyncs_total", s.resyncs)
        yield _counter("ledger_consumer_rejoins_total", s.rejoins)
        yield _latency(self.p.batch_latency)
        # Measured by the processor's own thread: the consumer must not be touched from here.
        yield _lag({(self.p.topic, p): n for p, n in dict(self.p.lag).items()})


class ProjectorCollector(Collector):
    def __init__(self, projector: Any) -> None:
        self.p = projector

    def collect(self) -> Iterator[Metric]:
        s = self.p.stats
        yield _counter("ledger_projected_events_total", s.events)
        yield _counter("ledger_projected_records_total", s.records)
        yield _counter(BATCHES.name, s.batches)
        yield _counter(DEAD_LETTERS.name, s.dead_letters)
        yield _counter("ledger_position_conflicts_total", s.conflicts)
        yield _latency(self.p.batch_latency)
        yield _lag(dict(s.lag))


class BrokerProbe:
    """Whether the brokers answer, asked every few seconds by a thread of its own (never
    by the service's loop, never while a probe waits for an answer)."""

    def __init__(self, settings: Settings, every_s: float | None = None) -> None:
        self.settings = settings
        self.every_s = settings.tuning.broker_probe_every_s if every_s is None else every_s
        self.problem = "brokers not asked yet"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="broker-probe")
        self._thread.start()

    def _run(self) -> None:
        admin = make_admin(self.settings)
        while True:
            try:
                admin.describe_cluster(request_timeout=self.every_s).result(self.every_s + 1)
                self.problem = ""
            except (KafkaException, TimeoutError) as e:
                self.problem = f"brokers at {self.settings.bootstrap} unreachable: {e}"
            admin.poll(0)  # serves librdkafka's queued log lines and errors
            if self._stop.wait(self.every_s):
                return

    def close(self) -> None:
        self._stop.set()


class MetricsServer:
    """/metrics in Prometheus text format, /healthz and /readyz as JSON (200 or 503)."""

    def __init__(self, registry: CollectorRegistry, health: Check, ready: Check,
                 endpoint: Endpoint, on_close: Callable[[], None] = lambda: None) -> None:
        server_class = _Server6 if ":" in endpoint.host else ThreadingHTTPServer
        try:
            self.httpd = server_class((endpoint.host, endpoint.port), _handler(
                registry, {"/healthz": health, "/readyz": ready}))
        except OSError as e:
            on_close()
            raise UsageError(f"cannot serve metrics on {endpoint.host}:{endpoint.port}: "
                             f"{e.strerror or e}") from e
        self.host, self.port = endpoint.host, int(self.httpd.server_address[1])
        self._on_close = on_close
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="metrics")
        self.thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._on_close()


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(registry: CollectorRegistry,
             checks: dict[str, Check]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif path in checks:
                ok, detail = checks[path]()
                body = json.dumps({"ok": ok, **detail}).encode()
                self._send(200 if ok else 503, "application/json", body)
            else:
                self._send(404, "text/plain", b"not found\n")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes every few seconds would drown the service's own log

    return Handler


def _first(*problems: Callable[[], str]) -> tuple[bool, dict[str, Any]]:
    """Ready unless one of the checks, asked in order, names a problem."""
    for problem in problems:
        reason = problem()
        if reason:
            return False, {"reason": reason}
    return True, {}


def serve_processor_metrics(processor: Any, endpoint: Endpoint) -> MetricsServer:
    """The processor's endpoints. Ready: the loop runs (so its state store is open), the
    brokers answer, the group has assigned this instance its partitions, lag is small."""
    registry = CollectorRegistry()
    registry.register(ProcessorCollector(processor))
    broker = BrokerProbe(processor.settings)

    def health() -> tuple[bool, dict[str, Any]]:
        alive, why = processor.heartbeat.alive()
        detail = {"instance": processor.instance_id, "partitions": sorted(processor.group.owned)}
        return alive, detail if alive else {**detail, "reason": why}

    def ready() -> tuple[bool, dict[str, Any]]:
        lag = {f"{processor.topic}[{p}]": n for p, n in dict(processor.lag).items()}
        return _first(
            lambda: processor.heartbeat.alive()[1],
            lambda: broker.problem,
            lambda: "" if processor.group.assigned else "no partition assignment yet",
            lambda: lag_problem(lag, endpoint.ready_max_lag))

    server = MetricsServer(registry, health, ready, endpoint, on_close=broker.close)
    processor.metrics_server = server
    return server


def serve_projector_metrics(projector: Any, endpoint: Endpoint) -> MetricsServer:
    """The projector's endpoints. Ready: the loop runs, partitions are assigned, the store
    answered its last batch or ping, lag is small."""
    registry = CollectorRegistry()
    registry.register(ProjectorCollector(projector))

    def health() -> tuple[bool, dict[str, Any]]:
        alive, why = projector.heartbeat.alive()
        detail = {"batches": projector.stats.batches,
                  "partitions": [f"{t}[{p}]" for t, p in sorted(projector.expected)]}
        return alive, detail if alive else {**detail, "reason": why}

    def ready() -> tuple[bool, dict[str, Any]]:
        lag = {f"{t}[{p}]": n for (t, p), n in dict(projector.stats.lag).items()}
        return _first(
            lambda: projector.heartbeat.alive()[1],
            lambda: "" if projector.assigned else "no partition assignment yet",
            lambda: projector.store_problem,
            lambda: lag_problem(lag, endpoint.ready_max_lag))

    server = MetricsServer(registry, health, ready, endpoint)
    projector.metrics_url = server.url
    return server
