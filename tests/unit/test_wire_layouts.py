"""The hand-written codecs' layouts come from the schema files, and agree with the domain."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import pytest

from ledger.domain import AccountType, Actor, EntryKind
from ledger.errors import CodecError
from ledger.wire import HEADER_LEN, MAGIC, SCHEMA_DIR, Codec, account, balance, command, event
from ledger.wire import result as result_wire
from ledger.wire.catalogue import pin
from ledger.wire.event import compiled, read_compiled
from projections.rows import compiled_audit_table
from tests.unit.test_read_decode import SAMPLE

CODEC = Codec()
LAYOUTS = {"event": event.LAYOUT, "command": command.LAYOUT, "result": result_wire.LAYOUT,
           "balance": balance.LAYOUT, "account": account.LAYOUT}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_pin_is_its_catalogued_schema(name: str) -> None:
    layout = LAYOUTS[name]
    assert CODEC.catalogue.by_fingerprint[layout.fingerprint].name == name
    assert layout.header == MAGIC + layout.fingerprint and len(layout.header) == HEADER_LEN
    assert layout.header == CODEC.header(name)  # today's current versions


def test_enum_symbols_are_the_domain_enums_in_schema_order() -> None:
    assert tuple(EntryKind) == event.KINDS
    assert event.ACTORS == command.ACTORS == tuple(Actor)
    assert account.TYPES == balance.TYPES == tuple(AccountType)
    assert account.STATUSES == ("OPEN", "CLOSED")
    assert result_wire.STATUSES == ("ACCEPTED", "REJECTED")


@pytest.mark.skipif(not compiled(), reason="extension not built")
def test_the_compiled_reader_reads_the_pinned_layout() -> None:
    from ledger.wire import _eventreader  # type: ignore[attr-defined]

    built = (_eventreader.N_KINDS, _eventreader.N_ACTORS, _eventreader.HEADER_LEN)
    assert built == (len(event.KINDS), len(event.ACTORS), HEADER_LEN)


def test_a_pin_refuses_a_schema_file_changed_under_it(tmp_path: Path) -> None:
    shutil.copy(SCHEMA_DIR / "event.v1.avsc", tmp_path)
    fields = tuple(f["name"] for f in json.loads((SCHEMA_DIR / "event.v1.avsc").read_text())[
        "fields"])
    assert pin("event.v1", fields, tmp_path).fingerprint == event.FINGERPRINT
    with pytest.raises(CodecError, match="hand-written codec"):
        pin("event.v1", fields[:-1], tmp_path)
    with pytest.raises(CodecError, match="no enum field 'reason'"):
        pin("event.v1", fields, tmp_path).symbols("reason")


@pytest.mark.skipif(not compiled(), reason="extension not built")
def test_compiled_chunks_stay_intact_while_later_batches_come_and_go() -> None:
    """The compiled reader's buffers are bytes objects the Arrow arrays hold on to: rows
    read first are unchanged after many later reads, their garbage collected."""
    values = [CODEC.encode("event", {**SAMPLE, "event_id": f"e{i}"}) for i in range(200)]
    first = compiled_audit_table(read_compiled(values, [0] * 200, list(range(200)))[0], "t")
    expected = first.to_pylist()
    for n in range(50):
        later = [CODEC.encode("event", {**SAMPLE, "reason": "x" * n, "event_id": f"f{i}"})
                 for i in range(100)]
        compiled_audit_table(read_compiled(later, [1] * 100, list(range(100)))[0], "t")
        gc.collect()
    assert first.to_pylist() == expected
    assert first.column("event_id").to_pylist()[:4] == ["e0", "e0", "e1", "e1"]
