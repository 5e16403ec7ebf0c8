"""The general codec: any catalogued record, encoded with fastavro, decoded by fingerprint.

It encodes with the current (highest-versioned) schema of a name; it decodes with the
writer schema its header names, resolved to the current reader schema of the same name.
"""

from __future__ import annotations

from io import BytesIO

from fastavro import schemaless_reader, schemaless_writer

from ledger.errors import MalformedRecordError, TruncatedRecordError, UnknownFingerprintError
from ledger.wire.catalogue import HEADER_LEN, MAGIC, Record, SchemaCatalogue, SchemaVersion


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
