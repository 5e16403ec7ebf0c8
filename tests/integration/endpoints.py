"""Asking a running service's metrics server: /metrics, /healthz, /readyz."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET path; (0, reason) while nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def get_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    code, body = get(port, path)
    return code, json.loads(body) if code else {"reason": body}


def samples(text: str) -> Samples:
    """(sample name, sorted labels) -> value, parsed with Prometheus' own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(port: int) -> Samples:
    code, text = get(port, "/metrics")
    assert code == 200, text
    return samples(text)


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    """probe()'s first truthy answer, asked every 50 ms."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
