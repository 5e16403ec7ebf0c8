"""Avro single-object encoding with a catalogue of every schema in schemas/.

Wire format (Avro specification): C3 01, the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema's Parsing Canonical Form, then the body.
The reader finds the writer schema by fingerprint and resolves it to the
current (highest-versioned) reader schema of the same name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from ledger.errors import (
    CodecError,
    MalformedRecordError,
    TruncatedRecordError,
    UnknownFingerprintError,
)

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"  # package data: in every install
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

    def versions_of(self, name: str) -> list[SchemaVersion]:
        return sorted(
            (v for v in self.by_fingerprint.values() if v.name == name), key=lambda v: v.version
        )

    def reader(self, name: str) -> SchemaVersion:
        try:
            return self.current[name]
        except KeyError:
            raise CodecError(f"no schema named {name!r} in the catalogue") from None


class Codec:
    """Encode with the current schema; decode any catalogued writer schema."""

    def __init__(self, catalogue: SchemaCatalogue | None = None) -> None:
        self.catalogue = catalogue or SchemaCatalogue.load()

    def header(self, name: str) -> bytes:
        return MAGIC + self.catalogue.reader(name).fingerprint

    def encode(self, name: str, record: Record) -> bytes:
        schema = self.catalogue.reader(name)
        out = BytesIO()
        out.write(MAGIC)
        out.write(schema.fingerprint)
        try:
            schemaless_writer(out, schema.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise MalformedRecordError(f"cannot encode {name} record: {e}") from e
        return out.getvalue()

    def decode(self, data: bytes | None, expected: str | None = None) -> tuple[str, Record]:
        """Return (schema name, record) resolved to the current reader schema."""
        writer = self._writer_of(data)
        assert data is not None
        if expected is not None and writer.name != expected:
            raise MalformedRecordError(
                f"expected a {expected} record, got {writer.name} v{writer.version}"
            )
        reader = self.catalogue.current[writer.name]
        return writer.name, self._read_body(data, writer, reader)

    def decode_as(self, name: str, data: bytes | None) -> Record:
        return self.decode(data, expected=name)[1]

    def _writer_of(self, data: bytes | None) -> SchemaVersion:
        if data is None or len(data) == 0:
            raise TruncatedRecordError("empty record: no single-object header")
        if data[:2] != MAGIC[: len(data[:2])]:
            raise MalformedRecordError(
                f"not Avro single-object encoding: starts with {data[:2].hex()}, expected c301"
            )
        if len(data) < HEADER_LEN:
            raise TruncatedRecordError(
                f"record of {len(data)} bytes ends inside its 10-byte header"
            )
        fp = data[2:HEADER_LEN]
        try:
            return self.catalogue.by_fingerprint[fp]
        except KeyError:
            raise UnknownFingerprintError(
                f"unknown writer schema fingerprint {fp.hex()}: not in schemas/ "
                "(deploy the schema file that wrote it)"
            ) from None

    @staticmethod
    def _read_body(data: bytes, writer: SchemaVersion, reader: SchemaVersion) -> Record:
        body = BytesIO(data)
        body.seek(HEADER_LEN)
        resolved = None if writer is reader else reader.parsed
        try:
            record = schemaless_reader(body, writer.parsed, resolved)
        except EOFError as e:
            raise TruncatedRecordError(f"{writer.name} record is truncated: {e}") from e
        except Exception as e:  # fastavro raises many types on garbage: all mean malformed
            raise MalformedRecordError(f"{writer.name} record is malformed: {e!r}") from e
        if body.tell() != len(data):
            raise MalformedRecordError(
                f"{writer.name} record has {len(data) - body.tell()} trailing bytes"
            )
        if not isinstance(record, dict):
            raise MalformedRecordError(f"{writer.name} record did not decode to a record")
        return record
