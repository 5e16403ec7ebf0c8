"""Prometheus metrics and a health endpoint for `serve` and `project`."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

Health = Callable[[], tuple[bool, dict[str, Any]]]


class ProcessorCollector(Collector):
    def __init__(self, processor: Any) -> None:
        self.p = processor

    def collect(self) -> Iterator[Any]:
        stats = self.p.stats
        yield CounterMetricFamily("ledger_commands", "Commands consumed.", value=stats.commands)
        yield CounterMetricFamily(
            "ledger_commands_accepted", "Commands accepted.", value=stats.accepted
        )
        rejected = CounterMetricFamily(
            "ledger_commands_rejected", "Commands rejected.", labels=["reason"]
        )
        for reason, n in sorted(stats.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield CounterMetricFamily(
            "ledger_dead_letters",
            "Records sent to the dead-letter topic.",
            value=stats.dead_letters,
        )
        yield CounterMetricFamily(
            "ledger_credits_refused",
            "Routed credits refused for their signature (unsigned, tampered, or signed with a "
            "key not held): dead-lettered, never applied.",
            value=stats.credits_refused,
        )
        yield CounterMetricFamily(
            "ledger_transactions_aborted", "Aborted transactions.", value=stats.aborts
        )
        yield CounterMetricFamily("ledger_batches", "Committed transactions.", value=stats.batches)
        yield CounterMetricFamily(
            "ledger_producer_restarts",
            "Transactional producers replaced after a stuck or failed transaction.",
            value=stats.producer_restarts,
        )
        yield CounterMetricFamily(
            "ledger_commit_retries",
            "Transactional calls repeated after a retriable error (e.g. commit_transaction).",
            value=stats.commit_retries,
        )
        yield CounterMetricFamily(
            "ledger_resyncs",
            "Re-synchronisations from the committed offsets after a transaction of unknown "
            "outcome or a rebalance mid-fetch.",
            value=stats.resyncs,
        )
        yield CounterMetricFamily(
            "ledger_consumer_rejoins",
            "Consumers replaced after a fatal error (e.g. fenced after a broker failover).",
            value=stats.rejoins,
        )
        yield GaugeMetricFamily(
            "ledger_batch_latency_seconds",
            "Duration of the last batch.",
            value=stats.last_batch_ms / 1000,
        )
        # Measured by the processor's own thread: the consumer must not be touched from here.
        yield _lag_family(dict(self.p.lag))


def _lag_family(lag: dict[int, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "ledger_consumer_lag", "Records behind the end of the input.", labels=["partition"]
    )
    for partition, n in sorted(lag.items()):
        family.add_metric([str(partition)], n)
    return family


class MetricsServer:
    """/metrics in Prometheus text format and /healthz as JSON, on 127.0.0.1."""

    def __init__(
        self, registry: CollectorRegistry, health: Health, port: int, host: str = "127.0.0.1"
    ) -> None:
        handler = _handler(registry, health)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="metrics")
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif self.path.startswith("/healthz"):
                ok, detail = health()
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


def serve_processor_metrics(processor: Any, port: int) -> MetricsServer:
    registry = CollectorRegistry()
    registry.register(ProcessorCollector(processor))

    def health() -> tuple[bool, dict[str, Any]]:
        owned = sorted(processor.group.owned)
        return processor.running, {"instance": processor.instance_id, "partitions": owned}

    server = MetricsServer(registry, health, port)
    processor.metrics_server = server
    return server


class ProjectorCollector(Collector):
    def __init__(self, projector: Any) -> None:
        self.p = projector

    def collect(self) -> Iterator[Any]:
        s = self.p.stats
        yield CounterMetricFamily("ledger_projected_events", "Journal events projected.",
                                  value=s.events)
        yield CounterMetricFamily("ledger_projected_records", "Records projected.",
                                  value=s.records)
        yield CounterMetricFamily("ledger_projector_batches", "Committed store batches.",
                                  value=s.batches)
        yield CounterMetricFamily("ledger_dead_letters", "Records sent to the dead-letter topic.",
                                  value=s.dead_letters)
        yield CounterMetricFamily("ledger_position_conflicts",
                                  "Batches dropped because another writer moved positions.",
                                  value=s.conflicts)
        yield GaugeMetricFamily("ledger_batch_latency_seconds", "Store time of the last batch.",
                                value=s.last_batch_ms / 1000)
        lag = GaugeMetricFamily("ledger_consumer_lag", "Records behind the end, per partition.",
                                labels=["partition"])
        for name, n in sorted(dict(s.lag).items()):
            lag.add_metric([name], n)
        yield lag


def serve_projector_metrics(projector: Any, port: int) -> MetricsServer:
    registry = CollectorRegistry()
    registry.register(ProjectorCollector(projector))
    running = {"ok": True}

    def health() -> tuple[bool, dict[str, Any]]:
        return running["ok"], {"batches": projector.stats.batches,
                               "partitions": sorted(projector.stats.lag)}

    return MetricsServer(registry, health, port)
