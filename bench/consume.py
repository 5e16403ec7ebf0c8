"""The ceilings: plain confluent-kafka consume (no decoding) and Kafka's own perf tool."""

from __future__ import annotations

import csv
import io
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

from ledger.kafka import make_consumer
from ledger.settings import Settings

PERF_CLASS = "org.apache.kafka.tools.ConsumerPerformance"
BATCH = 10_000


@dataclass
class Rate:
    """How many records in how long."""

    records: int
    seconds: float
    bytes: int = 0

    @property
    def per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def journal_ends(settings: Settings) -> dict[int, int]:
    """Last stable offset of every journal partition."""
    topic = settings.topic("events")
    consumer = make_consumer(settings, None)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                                  cached=False)[1]
                for p in sorted(meta.partitions)}
    finally:
        consumer.close()


def raw_consume(settings: Settings, expected: int, timeout_s: float = 600,
                extra: dict[str, Any] | None = None) -> Rate:
    """Every committed journal record from offset 0, counted but never decoded.

    The same client settings the replay uses (make_consumer: read_committed), the same
    batch size; the clock starts before assign, so connection set-up is included.
    `extra` overrides client properties (e.g. fetch.queue.backoff.ms) to show the headroom.
    """
    topic = settings.topic("events")
    ends = journal_ends(settings)
    consumer = make_consumer(settings, None, **(extra or {}))
    records = size = 0
    started = time.monotonic()
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = started + timeout_s
        while records < expected:
            msgs = consumer.consume(BATCH, 0.2)
            for m in msgs:
                if m.error() is None:
                    records += 1
                    size += len(m)
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw consume saw {records} of {expected} records")
        seconds = time.monotonic() - started
    finally:
        consumer.close()
    return Rate(records, seconds, size)


@dataclass
class PerfResult:
    rate: Rate  # fetch rate: without the consumer group's join time
    total_per_s: float  # nMsg.sec: with the join
    rebalance_ms: float
    raw_output: str


def kafka_consumer_perf(settings: Settings, jars: Path, messages: int,
                        timeout_s: float = 900) -> PerfResult:
    """Kafka's ConsumerPerformance (4.1: --messages) on the journal, read_committed."""
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "consumer.properties"
        conf.write_text("isolation.level=read_committed\n")
        log4j = Path(tmp) / "log4j2.properties"
        log4j.write_text("rootLogger.level = WARN\nrootLogger.appenderRef.e.ref = e\n"
                         "appender.e.type = Console\nappender.e.name = e\n"
                         "appender.e.target = SYSTEM_ERR\n"
                         "appender.e.layout.type = PatternLayout\n"
                         "appender.e.layout.pattern = %p %m%n\n")
        argv = ["java", "-Xmx512m", f"-Dlog4j2.configurationFile={log4j}",
                "-cp", f"{jars}/*", PERF_CLASS,
                "--bootstrap-server", settings.bootstrap, "--topic", settings.topic("events"),
                "--messages", str(messages), "--consumer.config", str(conf),
                "--group", f"{settings.topic_prefix}.bench-perf", "--timeout", "60000"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ConsumerPerformance failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-800:]}")
    return parse_perf_output(proc.stdout)


def parse_perf_output(text: str) -> PerfResult:
    """The tool prints a CSV header and one row:
    start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec,
    rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header_at = next((i for i, ln in enumerate(lines) if ln.startswith("start.time")), None)
    if header_at is None or header_at + 1 >= len(lines):
        raise RuntimeError(f"unexpected ConsumerPerformance output: {text[-800:]!r}")
    rows = list(csv.reader(io.StringIO("\n".join(lines[header_at:header_at + 2]))))
    row = dict(zip([h.strip() for h in rows[0]], [v.strip() for v in rows[1]], strict=False))
    fetch_ms = float(row["fetch.time.ms"])
    mb = float(row["data.consumed.in.MB"])
    records = int(row["data.consumed.in.nMsg"])
    rate = Rate(records, fetch_ms / 1000, int(mb * 1024 * 1024))
    return PerfResult(rate, float(row["nMsg.sec"]), float(row["rebalance.time.ms"]), text)
