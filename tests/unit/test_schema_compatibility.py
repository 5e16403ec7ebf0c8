"""Every schema version in schemas/ reads, and is read by, the current one."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.validation import validate

from ledger.wire import SCHEMA_DIR, SchemaCatalogue, SchemaVersion
from ledger.wire.catalogue import strip_logical_types
from tests.unit.samples import SAMPLES

CATALOGUE = SchemaCatalogue.load(SCHEMA_DIR)
PAIRS = [
    (old, CATALOGUE.reader(old.name))
    for old in sorted(CATALOGUE.by_fingerprint.values(), key=lambda v: (v.name, v.version))
]


def _sample_for(version: SchemaVersion) -> dict[str, Any]:
    """The sample restricted to the fields the version has, defaults filled in."""
    fields = version.raw["fields"]
    base = SAMPLES[version.name]
    return {f["name"]: base.get(f["name"], f.get("default")) for f in fields}


def _can_resolve(writer: Any, reader: Any, record: dict[str, Any]) -> dict[str, Any]:
    buf = BytesIO()
    schemaless_writer(buf, writer, record)
    buf.seek(0)
    out = schemaless_reader(buf, writer, reader)
    assert isinstance(out, dict)
    return out


def test_every_file_is_catalogued() -> None:
    files = sorted(Path(SCHEMA_DIR).glob("*.avsc"))
    assert len(files) == len(CATALOGUE.by_fingerprint), "two files share a fingerprint"
    assert set(CATALOGUE.current) == {"command", "event", "account", "balance", "result", "guard"}


@pytest.mark.parametrize(("old", "current"), PAIRS, ids=lambda v: f"{v.name}.v{v.version}")
def test_current_reads_old_and_old_reads_current(
    old: SchemaVersion, current: SchemaVersion
) -> None:
    old_record = _sample_for(old)
    assert validate(old_record, old.parsed)
    _can_resolve(old.parsed, current.parsed, old_record)  # backward
    _can_resolve(current.parsed, old.parsed, _sample_for(current))  # forward


def test_checker_catches_an_incompatible_change() -> None:
    """A removed field without default must fail the same check: the test can fail."""
    event = CATALOGUE.reader("event")
    broken = json.loads(json.dumps(strip_logical_types(event.raw)))
    broken["fields"].append({"name": "tenant", "type": "string"})
    broken_parsed = parse_schema(broken, named_schemas={})
    with pytest.raises(Exception, match="tenant"):
        _can_resolve(event.parsed, broken_parsed, _sample_for(event))


def test_required_journal_fields() -> None:
    fields = {f["name"]: f["type"] for f in CATALOGUE.reader("event").raw["fields"]}
    for name in ("event_id", "command_id", "kind", "postings", "occurred_at", "actor", "reason"):
        assert name in fields
    assert fields["occurred_at"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert fields["actor"]["symbols"] == ["SYSTEM", "USER", "ADMIN"]
    posting = fields["postings"]["items"]["fields"]
    assert [(f["name"], f["type"]) for f in posting] == [("account", "string"), ("amount", "long")]
