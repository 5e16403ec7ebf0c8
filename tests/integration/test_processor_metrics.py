"""Operating the processor: `serve --metrics-port` (Prometheus text, /healthz) and JSON logs.

/readyz has tests of its own (test_readiness.py)."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from ledger.client import LedgerClient
from ledger.domain import Actor, Earn, OpenAccount, Spend
from ledger.health import Endpoint
from ledger.kafka import make_producer, partition_for
from ledger.metrics import serve_processor_metrics
from ledger.settings import Settings
from ledger.wiring import build_processor
from tests.integration.endpoints import free_port, get, samples, wait_until
from tests.integration.ledger_helpers import cli_args
from tests.integration.stacks import spawn, stop, wait_for_line

pytestmark = pytest.mark.integration


def test_serve_exposes_metrics_health_and_json_logs(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.jsonl"
    argv = [*cli_args(settings), "--log-format", "json", "-v", "serve", "--instance-id", "ops",
            "--metrics-port", str(port)]
    proc = spawn(argv, log)
    try:
        wait_for_line(log, "owns partitions [0, 1, 2]")
        code, body = get(port, "/healthz")
        assert code == 200, body
        health = json.loads(body)
        assert health == {"ok": True, "instance": "ops", "partitions": [0, 1, 2]}
        assert get(port, "/nothing")[0] == 404

        client = LedgerClient(settings)
        send = client.send
        assert send(OpenAccount(command_id="o1", actor=Actor.SYSTEM, reason="",
                                account="user:ann", grant=10)).accepted
        assert send(Earn(command_id="e1", actor=Actor.USER, reason="", account="user:ann",
                         amount=5)).accepted
        assert send(Spend(command_id="s1", actor=Actor.USER, reason="", account="user:ann",
                          amount=99)).reason == "insufficient_points"
        assert send(Spend(command_id="s2", actor=Actor.USER, reason="", account="user:ann",
                          amount=99)).reason == "insufficient_points"
        assert send(Earn(command_id="e2", actor=Actor.USER, reason="", account="user:nobody",
                         amount=5)).reason == "unknown_account"
        client.close()
        producer = make_producer(settings)
        producer.produce(settings.topic("commands"), key=b"user:ann", value=b"garbage")
        producer.flush(10)

        def scraped() -> dict[Any, float] | None:
            code, text = get(port, "/metrics")
            assert code == 200
            got = samples(text)
            return got if got.get(("ledger_dead_letters_total", ())) == 1 else None

        metrics = wait_until("the dead letter in /metrics", scraped)
        assert metrics[("ledger_commands_total", ())] == 6
        assert metrics[("ledger_commands_accepted_total", ())] == 2
        rejected = {labels[0][1]: v for (name, labels), v in metrics.items()
                    if name == "ledger_commands_rejected_total"}
        assert rejected == {"insufficient_points": 2, "unknown_account": 1}
        lag = {tuple(labels): v for (name, labels), v in metrics.items()
               if name == "ledger_consumer_lag_records"}
        commands = settings.topic("commands")
        assert lag == {(("partition", str(p)), ("topic", commands)): 0 for p in range(3)}
        batches = metrics[("ledger_batches_total", ())]
        assert batches >= 1
        # A histogram of every committed batch: as many observations as batches.
        assert metrics[("ledger_batch_latency_seconds_count", ())] == batches
        assert metrics[("ledger_batch_latency_seconds_bucket", (("le", "+Inf"),))] == batches
        assert 0 < metrics[("ledger_batch_latency_seconds_sum", ())] < 10 * batches
        assert metrics[("ledger_transactions_aborted_total", ())] == 0
        assert metrics[("ledger_consumer_rejoins_total", ())] == 0
        assert metrics[("ledger_producer_restarts_total", ())] == 0
    finally:
        assert stop(proc) == 0, log.read_text()[-2000:]
    lines = log.read_text().splitlines()
    assert lines, "serve logged nothing"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    utc_ms = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
    assert all(utc_ms.fullmatch(r["ts"]) for r in records), records[0]["ts"]
    messages = [r["msg"] for r in records]
    assert any("owns partitions [0, 1, 2]" in m for m in messages)
    assert any("dead-lettering" in m for m in messages)
    assert any("finishing the open batch" in m for m in messages)  # SIGTERM, drained
    assert {r["level"] for r in records} <= {"debug", "info", "warning", "error"}


def test_health_before_start_and_lag_while_a_batch_is_held(settings: Settings) -> None:
    """/healthz is 503 until the processor's loop runs; lag counts the records not yet
    consumed."""
    key = b"user:lagging"
    part = str(partition_for(key, settings.partitions))
    producer = make_producer(settings)
    for n in range(30):  # a backlog, there before the processor starts
        producer.produce(settings.topic("commands"), key=key, value=b"garbage %d" % n)
    producer.flush(10)

    processor = build_processor(settings, "lagging", max_batch=1)
    server = serve_processor_metrics(processor, Endpoint(0))
    code, body = get(server.port, "/healthz")
    assert code == 503 and json.loads(body)["reason"] == "loop not running", body

    release, held = threading.Event(), threading.Event()
    process_batch = processor._process_batch

    def holding(msgs: Any) -> None:  # the first batch waits until the test has scraped
        held.set()
        assert release.wait(60)
        process_batch(msgs)

    processor._process_batch = holding  # type: ignore[method-assign]
    thread = threading.Thread(target=processor.run, daemon=True)
    thread.start()
    try:
        assert held.wait(60)
        code, body = get(server.port, "/healthz")
        assert code == 200 and json.loads(body)["partitions"] == [0, 1, 2], body
        metrics = samples(get(server.port, "/metrics")[1])
        lag_of = ("ledger_consumer_lag_records",
                  (("partition", part), ("topic", settings.topic("commands"))))
        lag = metrics[lag_of]
        assert lag == 29  # one record consumed (and held), 29 behind it
        assert metrics[("ledger_dead_letters_total", ())] == 0
        release.set()

        def drained() -> bool:
            got = samples(get(server.port, "/metrics")[1])
            return got.get(("ledger_dead_letters_total", ())) == 30 and got.get(lag_of) == 0

        wait_until("the backlog to drain", drained)
    finally:
        release.set()
        processor.stop()
        thread.join(30)
    assert not thread.is_alive()
