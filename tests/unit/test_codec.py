"""The single-object codec: round trips, interoperability details, garbage."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import (
    CodecError,
    MalformedRecordError,
    TruncatedRecordError,
    UnknownFingerprintError,
)
from ledger.wire import MAGIC, Codec, SchemaCatalogue
from tests.unit.samples import SAMPLES

CRC64_OF_INT = bytes.fromhex("8f5c393f1ad57572")  # the spec's CRC-64-AVRO of "int", LE


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip_every_schema(codec: Codec, name: str) -> None:
    data = codec.encode(name, SAMPLES[name])
    assert data[:2] == MAGIC
    assert data[2:10] == codec.catalogue.reader(name).fingerprint
    decoded_name, record = codec.decode(data)
    assert decoded_name == name
    for key, value in SAMPLES[name].items():
        assert record[key] == value


def test_fingerprint_follows_the_specification() -> None:
    from ledger.wire.catalogue import schema_fingerprint

    assert schema_fingerprint("int") == CRC64_OF_INT


def test_logical_types_do_not_change_the_fingerprint(codec: Codec) -> None:
    import json

    from fastavro import parse_schema

    from ledger.wire.catalogue import schema_fingerprint

    event = codec.catalogue.reader("event")
    with_logical = parse_schema(json.loads(event.path.read_text()), named_schemas={})
    assert schema_fingerprint(with_logical) == event.fingerprint


def test_unknown_fingerprint_is_named(codec: Codec) -> None:
    with pytest.raises(UnknownFingerprintError, match="unknown writer schema fingerprint"):
        codec.decode(MAGIC + b"\x00" * 8 + b"\x02a")


def test_truncated_body(codec: Codec) -> None:
    data = codec.encode("event", SAMPLES["event"])
    with pytest.raises(TruncatedRecordError):
        codec.decode(data[:-5])


def test_truncated_header(codec: Codec) -> None:
    with pytest.raises(TruncatedRecordError, match="header"):
        codec.decode(MAGIC + b"\x01\x02")


def test_empty_and_none(codec: Codec) -> None:
    for data in (b"", None):
        with pytest.raises(TruncatedRecordError, match="empty"):
            codec.decode(data)


def test_not_single_object(codec: Codec) -> None:
    with pytest.raises(MalformedRecordError, match="c301"):
        codec.decode(b"user:1,100")


def test_trailing_bytes(codec: Codec) -> None:
    data = codec.encode("event", SAMPLES["event"])
    with pytest.raises(MalformedRecordError, match="trailing"):
        codec.decode(data + b"\x00")


def test_wrong_record_type(codec: Codec) -> None:
    data = codec.encode("command", SAMPLES["command"])
    with pytest.raises(MalformedRecordError, match="expected a event"):
        codec.decode_as("event", data)


def test_encode_rejects_a_bad_record(codec: Codec) -> None:
    with pytest.raises(MalformedRecordError):
        codec.encode("event", {"event_id": 1})


def test_catalogue_rejects_bad_file_names(tmp_path: Any) -> None:
    (tmp_path / "event.avsc").write_text('"int"')
    with pytest.raises(CodecError, match="named"):
        SchemaCatalogue.load(tmp_path)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_escapes_as_another_exception(data: bytes) -> None:
    codec = Codec()
    with contextlib.suppress(CodecError):
        codec.decode(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_corrupted_records_raise_codec_errors(name: str, data: st.DataObject) -> None:
    codec = Codec()
    good = bytearray(codec.encode(name, SAMPLES[name]))
    cut = data.draw(st.integers(min_value=0, max_value=len(good) - 1))
    flips = data.draw(st.lists(st.integers(0, len(good) - 1), max_size=4))
    for i in flips:
        good[i] ^= 0xFF
    with contextlib.suppress(CodecError):
        codec.decode(bytes(good[:cut]) if cut else bytes(good))


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=80),
    st.lists(st.tuples(st.text(min_size=1, max_size=70), st.integers(-(2**62), 2**62)), max_size=6),
    st.integers(0, 2**41),
)
def test_event_round_trip_property(reason: str, postings: list[tuple[str, int]], ts: int) -> None:
    codec = Codec()
    record = dict(
        SAMPLES["event"],
        reason=reason,
        occurred_at=ts,
        postings=[{"account": a, "amount": n} for a, n in postings],
    )
    assert codec.decode_as("event", codec.encode("event", record)) == record
