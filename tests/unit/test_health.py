"""Liveness, readiness and the batch-latency histogram, without services: a fake clock, a
fake projector, the metrics server on a loopback port of its own."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from cli.main import cli
from ledger.errors import UsageError
from ledger.health import Endpoint, Heartbeat, LatencyHistogram, lag_problem
from ledger.metrics import serve_projector_metrics
from projections.projector import ProjectorStats


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_heartbeat_alive_while_the_loop_goes_round_and_stuck_when_it_does_not() -> None:
    clock = Clock()
    beat = Heartbeat(clock, stall_after_s=300)
    assert beat.alive() == (False, "loop not running")
    beat.beat()
    clock.now += 300
    assert beat.alive() == (True, "")
    clock.now += 1
    assert beat.alive() == (False, "loop stuck for 301s")
    beat.beat()
    assert beat.alive() == (True, "")
    beat.stop()
    assert beat.alive() == (False, "loop not running")


def test_latency_histogram_counts_each_batch_in_the_first_bucket_that_holds_it() -> None:
    histogram = LatencyHistogram((0.01, 0.1, 1.0))
    for seconds in (0.01, 0.011, 0.5, 2.0, 0.0):
        histogram.observe(seconds)
    buckets, total = histogram.cumulative()
    assert buckets == [("0.01", 2.0), ("0.1", 3.0), ("1.0", 4.0), ("+Inf", 5.0)]
    assert total == pytest.approx(2.521)


def test_lag_problem_names_the_worst_partition_over_the_threshold() -> None:
    assert lag_problem({}, 0) == ""
    assert lag_problem({"p.events[0]": 5, "p.events[1]": 10}, 10) == ""
    assert lag_problem({"p.events[0]": 5, "p.events[1]": 11}, 10) == (
        "consumer lag 11 records on p.events[1] > --ready-max-lag 10")


def _get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_projector_readiness_names_the_first_thing_not_in_order() -> None:
    projector = SimpleNamespace(heartbeat=Heartbeat(), assigned=False, store_problem="",
                                stats=ProjectorStats(), expected={},
                                batch_latency=LatencyHistogram(), metrics_url="off")
    server = serve_projector_metrics(projector, Endpoint(0, ready_max_lag=100))
    try:
        assert projector.metrics_url == f"http://127.0.0.1:{server.port}"

        def ready() -> tuple[int, dict[str, Any]]:
            code, body = _get(server.port, "/readyz")
            return code, json.loads(body)

        assert ready() == (503, {"ok": False, "reason": "loop not running"})
        assert _get(server.port, "/healthz")[0] == 503
        projector.heartbeat.beat()
        assert _get(server.port, "/healthz")[0] == 200
        assert ready() == (503, {"ok": False, "reason": "no partition assignment yet"})
        projector.assigned = True
        projector.store_problem = "Postgres at postgresql+psycopg://u:***@db/l is unavailable"
        assert ready() == (503, {"ok": False, "reason": projector.store_problem})
        projector.store_problem = ""
        projector.stats.lag = {("p.events", 2): 101, ("p.events", 1): 7}
        assert ready() == (503, {"ok": False, "reason": "consumer lag 101 records on "
                                 "p.events[2] > --ready-max-lag 100"})
        projector.stats.lag = {("p.events", 2): 100}
        assert ready() == (200, {"ok": True})
        assert _get(server.port, "/metrics")[0] == 200
        assert _get(server.port, "/elsewhere")[0] == 404
    finally:
        server.close()


def test_a_port_in_use_is_one_line_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        projector = SimpleNamespace(stats=ProjectorStats(), batch_latency=LatencyHistogram())
        with pytest.raises(UsageError, match=f"cannot serve metrics on 127.0.0.1:{port}: "):
            serve_projector_metrics(projector, Endpoint(port))


@pytest.mark.parametrize("command", ["serve", "project"])
def test_metrics_host_and_lag_need_a_port(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--metrics-host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "--metrics-host and --ready-max-lag need --metrics-port" in result.output
