"""The hot codecs (ledger.wire.hot) write and read exactly what the general codec does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain import (
    ENTRY_CLASSES,
    AccountState,
    AccountType,
    Actor,
    EntryKind,
    JournalEntry,
    Posting,
)
from ledger.errors import CodecError
from ledger.records import Outcome, entry_to_record, snapshot_to_record
from ledger.wire import SCHEMA_DIR, Codec, SchemaCatalogue, balance, command, event, result
from ledger.wire.avro import long_bytes
from ledger.wire.hot import HotCodec

CODEC = Codec()
HOT = HotCodec(CODEC)
text = st.text(max_size=100)  # any unicode but lone surrogates (not valid Avro strings)
longs = st.integers(-(2**63), 2**63 - 1)
# Values around the varint's byte boundaries, where an encoder goes wrong first.
edgy = st.sampled_from([0, -1, 1, 63, 64, -64, -65, 8191, 8192, 2**31, -(2**31), 2**62,
                        2**63 - 1, -(2**63), 1_764_000_000_000])
numbers = longs | edgy

entries = st.builds(
    lambda kind, **fields: ENTRY_CLASSES[kind](**fields),
    st.sampled_from(list(EntryKind)),
    event_id=text,
    command_id=text,
    postings=st.lists(st.builds(Posting, text, numbers), max_size=70).map(tuple),
    occurred_at_ms=numbers,
    actor=st.sampled_from(list(Actor)),
    reason=st.text(max_size=300),
    reverses_event_id=st.none() | text,
)
outcomes = st.builds(
    Outcome,
    text,
    st.booleans(),
    st.none() | text,
    text,
    st.lists(text, max_size=70).map(tuple),
    text,
    text,
    st.none() | text,
)
states = st.builds(AccountState, text, st.sampled_from(list(AccountType)), numbers, numbers,
                   st.booleans())
commands = st.fixed_dictionaries({
    "command_id": text,
    "kind": st.sampled_from(command.KINDS),
    "account": text,
    "counterparty": st.none() | text,
    "amount": numbers,
    "floor": numbers,
    "ref_event_id": st.none() | text,
    "ref_partition": st.none() | st.integers(-(2**31), 2**31 - 1),
    "ref_offset": st.none() | numbers,
    "actor": st.sampled_from(command.ACTORS),
    "reason": st.text(max_size=300),
    "issued_at": numbers,
})


def test_the_pins_are_the_current_schemas() -> None:
    # A changed schema file changes its fingerprint: the hot path must then step aside.
    for name, module in (("event", event), ("result", result), ("balance", balance),
                         ("command", command)):
        assert CODEC.catalogue.reader(name).fingerprint == module.FINGERPRINT


@settings(max_examples=400)
@given(entries)
def test_events_are_byte_identical(entry: JournalEntry) -> None:
    assert HOT.event(entry) == CODEC.encode("event", entry_to_record(entry))


@settings(max_examples=400)
@given(outcomes, numbers)
def test_results_are_byte_identical(outcome: Outcome, at: int) -> None:
    assert HOT.result(outcome, at) == CODEC.encode("result", outcome.to_record(at))


@settings(max_examples=400)
@given(states, numbers, st.none() | text)
def test_balances_are_byte_identical(state: AccountState, at: int, last: str | None) -> None:
    assert HOT.balance(state, at, last) == CODEC.encode(
        "balance", snapshot_to_record(state, at, last))


@settings(max_examples=400)
@given(commands)
def test_commands_decode_like_the_codec(rec: dict[str, Any]) -> None:
    data = CODEC.encode("command", rec)
    decoded, expected = HOT.command(data), CODEC.decode_as("command", data)
    assert decoded == expected == rec
    assert list(decoded) == list(expected)  # the codec's field order too


def _outcome_of(decode: Any, data: bytes) -> Any:
    try:
        return decode(data)
    except CodecError as e:
        return (type(e), str(e))


@settings(max_examples=400)
@given(commands, st.data())
def test_damaged_commands_fail_like_the_codec(rec: dict[str, Any], data: st.DataObject) -> None:
    raw = CODEC.encode("command", rec)
    at = data.draw(st.integers(0, len(raw) - 1))
    byte = data.draw(st.integers(0, 255))
    for damaged in (raw[:at], raw + b"\x00", raw[:at] + bytes([byte]) + raw[at + 1:],
                    raw[:at] + bytes([byte]) + raw[at:], raw[:at] + b"\xff" * 10):
        expected = _outcome_of(lambda d: CODEC.decode_as("command", d), damaged)
        assert _outcome_of(HOT.command, damaged) == expected
        fast = command.read(damaged) if damaged[:10] == raw[:10] else None
        assert fast is None or fast == expected  # what the fast reader vouches for is right


def test_records_the_fast_reader_leaves_to_the_codec() -> None:
    rec = {"command_id": "c", "kind": "EARN", "account": "user:a", "counterparty": None,
           "amount": -(2**63), "floor": 0, "ref_event_id": None, "ref_partition": None,
           "ref_offset": None, "actor": "USER", "reason": "", "issued_at": 0}
    data = CODEC.encode("command", rec)
    assert command.read(data) is None  # a 10-byte varint
    assert HOT.command(data) == rec


def test_a_tombstone_fails_like_the_codec() -> None:
    assert _outcome_of(HOT.command, None) == _outcome_of(
        lambda d: CODEC.decode_as("command", d), None)


def test_longs_outside_64_bits_are_refused() -> None:
    for n in (2**63, -(2**63) - 1):
        try:
            long_bytes(n)
        except OverflowError:
            continue
        raise AssertionError(f"{n} was encoded")


def test_a_new_schema_version_takes_the_codec_path(tmp_path: Path) -> None:
    """With event.v2 released, the hot codec writes v2 through the codec, not v1 bytes."""
    for f in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(f, tmp_path / f.name)
    v2 = json.loads((SCHEMA_DIR / "event.v1.avsc").read_text())
    v2["fields"].append({"name": "note", "type": "string", "default": ""})
    (tmp_path / "event.v2.avsc").write_text(json.dumps(v2))
    codec = Codec(SchemaCatalogue.load(tmp_path))
    entry = ENTRY_CLASSES[EntryKind.EARNED](
        event_id="e", command_id="c", postings=(Posting("user:a", 5), Posting("system:x", -5)),
        occurred_at_ms=1, actor=Actor.USER, reason="r")
    hot = HotCodec(codec)
    assert hot.event(entry) == codec.encode("event", {**entry_to_record(entry), "note": ""})
    assert hot.event(entry) != HOT.event(entry)
