"""The ports of every stack the tests, the fault scenarios and the bench start: below Linux's
ephemeral range, apart from each other and from the default stack `make demo` leaves running,
and written in one place (tests/integration/stacks.py), not as literals in the tests."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path

import pytest

import devstack
from bench import stack as bench_stack
from devstack import kafka as dkafka
from faults.coordinator import CoordinatorConfig
from tests.integration.stacks import FAULTS_KAFKA, TEST_STACKS, KafkaPorts, PgPorts

ROOT = Path(__file__).resolve().parents[2]
SCANNED = [*sorted((ROOT / "tests" / "integration").glob("*.py")),
           *sorted((ROOT / "faults").glob("*.py")), *sorted((ROOT / "bench").glob("*.py"))]
ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):(\d{4,5})\b")


def default_stack() -> dict[str, set[int]]:
    """What `ledger dev up` (and `make demo`, which runs it) listens on by default, at its
    largest: three brokers with auth, PostgreSQL and the ports it may move up to."""
    defaults = inspect.signature(devstack.up).parameters
    base, pg = defaults["base_port"].default, defaults["pg_port"].default
    kafka = set(devstack.stack_ports(dkafka.ClusterSpec(3, base, auth=True)))
    return {"default dev stack / make demo": kafka | PgPorts("", pg).ports()}


def bench_stacks() -> dict[str, set[int]]:
    """The bench's own stack (bench/stack.py): where its port searches may land."""
    first = bench_stack.KAFKA_FIRST_PORT
    kafka = {p + off for p in range(first, first + 400, 10)
             for off in (0, bench_stack.CONTROLLER_OFFSET)}
    pg = set(range(bench_stack.PG_FIRST_PORT, bench_stack.PG_FIRST_PORT + 400))
    return {"bench stack": kafka | pg}


def starts() -> set[int]:
    """The first port of each stack in the plan: the only port literals code may write."""
    defaults = inspect.signature(devstack.up).parameters
    return ({s.base if isinstance(s, KafkaPorts) else s.first for s in TEST_STACKS}
            | {defaults["base_port"].default, defaults["pg_port"].default,
               bench_stack.KAFKA_FIRST_PORT, bench_stack.PG_FIRST_PORT})


def plan() -> dict[str, set[int]]:
    stacks = {s.name: s.ports() for s in TEST_STACKS}
    assert len(stacks) == len(TEST_STACKS), "two test stacks share a name"
    return {**stacks, **default_stack(), **bench_stacks()}


def test_every_stack_port_is_below_the_ephemeral_range() -> None:
    for name, ports in plan().items():
        assert ports, name
        assert min(ports) >= 1024 and max(ports) < devstack.EPHEMERAL_FLOOR, (
            f"{name}: ports {min(ports)}-{max(ports)}")


def test_no_two_stacks_share_a_port() -> None:
    for (a, ports_a), (b, ports_b) in combinations(plan().items(), 2):
        assert not ports_a & ports_b, f"{a} and {b} share {sorted(ports_a & ports_b)[:5]}"


def test_free_base_never_leaves_the_floor() -> None:
    # 22092 with 3 brokers: the old search reached controllers at 32792-32794.
    bases = devstack.candidate_bases(22092, 3)
    assert bases and all(b + 2 + dkafka.CONTROLLER_OFFSET < devstack.EPHEMERAL_FLOOR
                         for b in bases)
    assert devstack.candidate_bases(29092, 1) == []  # controllers at 39092: never tried
    assert KafkaPorts("x", 29092, 1).ports() == set()


def test_the_faults_cluster_starts_where_the_plan_says() -> None:
    default = {f.name: f.default for f in dataclasses.fields(CoordinatorConfig)}["base_port"]
    assert default == FAULTS_KAFKA.base


def port_literals(source: str) -> Iterator[tuple[int, int]]:
    """(line, value) of each integer in a place that means a port: a keyword, variable or
    field named *port*, an argument of a *port* function or of free_base, a range() with a
    port-sized start, the default of a --*-port option, and host:port strings."""
    for node in ast.walk(ast.parse(source)):
        values: list[ast.expr] = []
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            values += [k.value for k in node.keywords if k.arg and "port" in k.arg.lower()]
            if "port" in name.lower() or name == "free_base":
                values += node.args
            if name == "range" and len(node.args) > 1 and _int(node.args[0]) >= 1024:
                values += node.args
            if name == "add_argument" and any("port" in str(_const(a)) for a in node.args):
                values += [k.value for k in node.keywords if k.arg == "default"]
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and any("port" in ast.unparse(t).lower()
                                              for t in targets):
                values.append(node.value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield from ((node.lineno, int(p)) for p in ADDRESS.findall(node.value))
        yield from ((v.lineno, _int(v)) for v in values if 1024 <= _int(v) <= 65535)


def _const(node: ast.expr) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _int(node: ast.expr) -> int:
    value = _const(node)
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def test_the_scan_finds_ports_wherever_they_are_written() -> None:
    source = """
devstack.up(home, base_port=29092)
PG_PORT = 36432
port = next(p for p in range(36532, 36632) if port_free(p))
base = free_base(39092, 3)
p.add_argument("--base-port", type=int, default=40092)
url = f"postgresql://postgres@127.0.0.1:41092/ledger"
events = range(2000)
"""
    assert sorted(v for _, v in port_literals(source)) == [
        29092, 36432, 36532, 36632, 39092, 40092, 41092]


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: str(p.relative_to(ROOT)))
def test_stacks_take_their_ports_from_the_plan(path: Path) -> None:
    known = starts()
    stray = [(line, port) for line, port in port_literals(path.read_text())
             if port not in known]
    assert not stray, (f"{path.name}: ports that are not a stack's first port in "
                       f"tests/integration/stacks.py's plan (line, port): {stray}")
