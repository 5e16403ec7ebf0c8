"""The metrics of `serve` and `project` follow one naming scheme and match the table in
docs/operations.md, name for name."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from ledger.health import LatencyHistogram
from ledger.metrics import METRICS, ProcessorCollector, ProjectorCollector
from ledger.processor.state import ProcessorStats
from projections.projector import ProjectorStats

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
UNITS = ("_seconds", "_bytes", "_records")
# (exposed name, type, label names)
Family = tuple[str, str, tuple[str, ...]]


def _families(collector: Collector) -> list[Family]:
    """What a scrape shows, as exposed: a counter under its _total name."""
    registry = CollectorRegistry()
    registry.register(collector)
    out = []
    for family in registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        assert family.samples, f"{name}: the fake service should give it a sample"
        # In the order the family declares them; a histogram's bucket bound aside.
        labels = tuple(k for k in family.samples[0].labels if k != "le")
        out.append((name, family.type, labels))
    return out


def _processor() -> list[Family]:
    processor = SimpleNamespace(
        stats=ProcessorStats(rejected={"insufficient_points": 2}), batch_latency=LatencyHistogram(),
        lag={0: 3}, topic="points.commands")
    return _families(ProcessorCollector(processor))


def _projector() -> list[Family]:
    projector = SimpleNamespace(stats=ProjectorStats(lag={("points.events", 1): 4}),
                                batch_latency=LatencyHistogram())
    return _families(ProjectorCollector(projector))


def _documented() -> dict[str, tuple[str, tuple[str, ...], str]]:
    """name -> (type, labels, services) from the table in docs/operations.md."""
    rows = re.findall(r"^\| `(ledger_\w+)` \| (\w+) \|([^|]*)\| (\w+) \| [^|]+ \|$",
                      DOC.read_text(), re.MULTILINE)
    table = {}
    for name, kind, labels, where in rows:
        assert name not in table, f"{name} twice in {DOC.name}"
        table[name] = (kind, tuple(re.findall(r"`(\w+)`", labels)), where)
    return table


@pytest.mark.parametrize("service", [_processor, _projector], ids=["serve", "project"])
def test_names_carry_their_units_and_counters_end_in_total(
        service: Callable[[], list[Family]]) -> None:
    for name, kind, labels in service():
        assert name.startswith("ledger_"), name
        assert not re.search(r"_(ms|millis|milliseconds|secs)(_|$)", name), name
        if kind == "counter":
            assert name.endswith("_total") and not name[: -len("_total")].endswith("_total")
        else:
            assert name.endswith(UNITS), f"{name}: a {kind} needs a unit in its name"
        if "partition" in labels:  # a partition number means nothing without its topic
            assert labels == ("topic", "partition"), (name, labels)


def test_one_name_means_one_thing_in_both_services() -> None:
    serve = {name: (kind, labels) for name, kind, labels in _processor()}
    project = {name: (kind, labels) for name, kind, labels in _projector()}
    shared = serve.keys() & project.keys()
    assert {"ledger_batches_total", "ledger_batch_latency_seconds",
            "ledger_consumer_lag_records", "ledger_dead_letters_total"} <= shared
    for name in shared:
        assert serve[name] == project[name], name
        assert name in METRICS  # one spec, so one help text, for both


def test_every_metric_is_in_the_operations_table_and_nothing_else() -> None:
    serve = {name: (kind, labels) for name, kind, labels in _processor()}
    project = {name: (kind, labels) for name, kind, labels in _projector()}
    exposed = {}
    for name in serve.keys() | project.keys():
        where = "both" if name in serve and name in project else \
            "serve" if name in serve else "project"
        exposed[name] = (*(serve.get(name) or project[name]), where)
    assert _documented() == exposed
    assert set(METRICS) == set(exposed)  # the catalogue holds nothing that is not exposed
