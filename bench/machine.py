"""What the numbers were measured on: CPU, memory, versions, and how busy the machine was."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages (other work on a shared machine skews results)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def wait_quiet(max_wait_s: float, busy_pct: float, window_s: float = 2.0) -> tuple[float, float]:
    """Wait (up to max_wait_s) until the machine's CPU use over window_s is below busy_pct.

    On a shared machine other work skews every figure; between phases nothing of the
    bench runs but its idle servers, so what shows here is mostly someone else's.
    Returns (the last CPU use in %, seconds waited).
    """
    import psutil

    started = time.monotonic()
    while True:
        busy = psutil.cpu_percent(interval=window_s)
        waited = time.monotonic() - started
        if busy < busy_pct or waited >= max_wait_s:
            return busy, waited


def java_version() -> str:
    try:
        proc = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[0] if lines else "unknown"


def kafka_version(jars: Path) -> str:
    for jar in sorted(jars.glob("kafka-clients-*.jar")):
        m = re.match(r"kafka-clients-(.+)\.jar$", jar.name)
        if m:
            return m.group(1)
    return "unknown"


def describe(jars: Path, postgres_version: str) -> dict[str, Any]:
    import confluent_kafka
    import duckdb
    import pyarrow
    import sqlalchemy

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gb": ram_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "duckdb": duckdb.__version__,
        "pyarrow": pyarrow.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "postgres": postgres_version,
        "kafka": kafka_version(jars),
        "java": java_version(),
        "load_at_start": load(),
    }
