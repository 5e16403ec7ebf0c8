"""The compiled event reader gives the rows and failures of the pure-Python one."""

from __future__ import annotations

import shutil
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.wire import Codec
from ledger.wire.event import HEADER, EventColumns, compiled, read_compiled, read_events
from projections.rows import audit_table, compiled_audit_table
from tests.unit.test_read_decode import SAMPLE, events

needs_extension = pytest.mark.skipif(not compiled(), reason="extension not built")
CODEC = Codec()
TOPIC = "t.events"


def test_the_extension_is_built_wherever_a_compiler_is() -> None:
    # Otherwise every other test here would skip quietly and the replay run ~5x slower.
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler: the pure-Python reader is used")
    assert compiled(), "ledger.wire._eventreader was not built: pip install -e ."


def both(values: list[bytes], as_of: int | None = None) -> tuple[Any, Any]:
    """(python, native): each (audit table, failed indices, later, events)."""
    parts = [i % 7 for i in range(len(values))]
    offs = [1000 + i for i in range(len(values))]
    cols = EventColumns()
    failures = read_events(cols, values, parts, offs, as_of)
    later = len(values) - len(failures) - len(cols)
    python = (audit_table(cols, TOPIC), [i for i, _ in failures], later, len(cols))
    cols, nfailures, nlater, nevents = read_compiled(values, parts, offs, as_of)
    table = compiled_audit_table(cols, TOPIC)
    table.validate(full=True)
    return python, (table, [i for i, _ in nfailures], nlater, nevents)


def assert_same(python: Any, native: Any) -> None:
    assert native[1:] == python[1:]
    assert native[0].schema == python[0].schema
    assert native[0].equals(python[0])  # by value, nulls too, any timestamp


@needs_extension
@settings(max_examples=200)
@given(st.lists(events, max_size=8), st.none() | st.integers(-(2**63), 2**63 - 1))
def test_same_rows_for_any_events(batch: list[dict[str, Any]], as_of: int | None) -> None:
    assert_same(*both([CODEC.encode("event", e) for e in batch], as_of))


@needs_extension
@settings(max_examples=300)
@given(st.lists(events, min_size=1, max_size=4), st.data())
def test_same_failures_for_damaged_records(batch: list[dict[str, Any]],
                                           data: st.DataObject) -> None:
    values = []
    for e in batch:
        raw = CODEC.encode("event", e)
        cut = data.draw(st.integers(len(HEADER), len(raw)))
        tail = data.draw(st.binary(max_size=12))
        values += [raw, raw[:cut] + tail]
    assert_same(*both(values))


@needs_extension
@settings(max_examples=300)
@given(st.lists(st.binary(max_size=80), max_size=6))
def test_same_failures_for_garbage(bodies: list[bytes]) -> None:
    assert_same(*both([HEADER + b for b in bodies]))


@needs_extension
@pytest.mark.parametrize("body", [
    b"\x02a\x02b\x00" + b"\xff" * 9 + b"\x02",  # a ten-byte varint past 64 bits
    b"\x02a\x02b\x00" + b"\xff" * 11,  # longer than ten bytes
    b"\x04\xed\xa0\x80",  # an encoded surrogate is not UTF-8
    b"\x04\xc0\x80",  # an overlong NUL
])
def test_edge_cases_fail_in_both(body: bytes) -> None:
    python, native = both([HEADER + body, CODEC.encode("event", SAMPLE)])
    assert python[1] == native[1] == [0]
    assert_same(python, native)


@needs_extension
def test_a_batch_bigger_than_the_first_buffers() -> None:
    # The C buffers start at 4 KiB and grow: a long reason in many events crosses that.
    values = [CODEC.encode("event", {**SAMPLE, "reason": "r" * 5000, "event_id": f"e{i}"})
              for i in range(50)]
    python, native = both(values)
    assert_same(python, native)
    assert native[0].num_rows == 100


@needs_extension
def test_nulls_of_reverses_survive_a_rolled_back_record() -> None:
    rev = CODEC.encode("event", {**SAMPLE, "reverses_event_id": "x"})
    plain = CODEC.encode("event", SAMPLE)
    python, native = both([rev, rev[:-1], plain, rev] * 3)
    assert_same(python, native)
    assert native[0].column("reverses_event_id").null_count == 6
    assert isinstance(native[0], pa.Table)
