"""The schema catalogue: every schema file in ledger/schemas, by fingerprint and by name.

Wire format (Avro single-object encoding): C3 01, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the body.
A hand-written reader or writer pins one schema file with `pin`, which derives what
it needs (fingerprint, enum symbols) from that file instead of copying it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

from ledger.errors import CodecError

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"  # package data (ledger/schemas)
_FILE_RE = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>\d+)\.avsc$")

Record = dict[str, Any]


@dataclass(frozen=True)
class SchemaVersion:
    """One schema file: its logical name (event, command, ...) and version."""

    name: str
    version: int
    path: Path
    raw: Any
    parsed: Any
    fingerprint: bytes


def schema_fingerprint(parsed: Any) -> bytes:
    """CRC-64-AVRO of the standalone schema's canonical form, little-endian."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def strip_logical_types(node: Any) -> Any:
    """A copy of a schema with every logicalType annotation removed."""
    if isinstance(node, dict):
        return {k: strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [strip_logical_types(v) for v in node]
    return node


def load_schema_file(path: Path) -> SchemaVersion:
    m = _FILE_RE.match(path.name)
    if not m:
        raise CodecError(f"schema file {path.name} is not named <name>.v<N>.avsc")
    try:
        raw = json.loads(path.read_text())
        # named_schemas={} keeps each file standalone: named types never leak across files.
        # Logical types are stripped for reading (timestamps stay epoch-millis ints, which is
        # cheaper); the fingerprint is unchanged because canonical form strips them too.
        parsed = parse_schema(strip_logical_types(raw), named_schemas={})
    except (ValueError, KeyError) as e:
        raise CodecError(f"schema file {path} is not a valid Avro schema: {e}") from e
    return SchemaVersion(
        m["name"], int(m["version"]), path, raw, parsed, schema_fingerprint(parsed)
    )


class SchemaCatalogue:
    """Every schema version ever released, by fingerprint and by name."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        self.by_fingerprint = {v.fingerprint: v for v in versions}
        self.current: dict[str, SchemaVersion] = {}
        for v in sorted(versions, key=lambda v: v.version):
            self.current[v.name] = v

    @classmethod
    def load(cls, directory: Path = SCHEMA_DIR) -> SchemaCatalogue:
        files = sorted(directory.glob("*.avsc"))
        if not files:
            raise CodecError(f"no schema files in {directory}")
        return cls([load_schema_file(p) for p in files])

    def reader(self, name: str) -> SchemaVersion:
        try:
            return self.current[name]
        except KeyError:
            raise CodecError(f"no schema named {name!r} in the catalogue") from None


@dataclass(frozen=True)
class Layout:
    """One schema file as a hand-written reader or writer implements it."""

    schema: SchemaVersion

    @property
    def fingerprint(self) -> bytes:
        return self.schema.fingerprint

    @property
    def header(self) -> bytes:
        return MAGIC + self.schema.fingerprint

    def symbols(self, field: str) -> tuple[str, ...]:
        """The symbols of an enum field, in schema order (an enum is written as its index)."""
        for f in self.schema.raw["fields"]:
            if f["name"] == field and isinstance(f["type"], dict) \
                    and f["type"].get("type") == "enum":
                return tuple(f["type"]["symbols"])
        raise CodecError(f"{self.schema.path.name} has no enum field {field!r}")


def pin(file_stem: str, fields: tuple[str, ...], directory: Path = SCHEMA_DIR) -> Layout:
    """The layout of schemas/<file_stem>.avsc, whose fields must be exactly `fields` in order.

    The field check stops a hand-written codec from reading a schema file edited under it
    (a released file never changes; a new layout is a new version)."""
    schema = load_schema_file(directory / f"{file_stem}.avsc")
    names = tuple(f["name"] for f in schema.raw["fields"])
    if names != fields:
        raise CodecError(f"{file_stem}.avsc has the fields {names}; its hand-written codec "
                         f"implements {fields}")
    return Layout(schema)
