"""The fast event reader agrees with the general codec, and fails the same records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import CodecError, UnknownFingerprintError
from ledger.wire import Codec
from ledger.wire.account import AccountDecoder
from ledger.wire.event import FINGERPRINT, EventColumns, EventDecoder, read_events

CODEC = Codec()
SAMPLE: dict[str, Any] = {
    "event_id": "e-1", "command_id": "c-1", "kind": "JOINED",
    "postings": [{"account": "user:a", "amount": -30}, {"account": "room:r", "amount": 30}],
    "occurred_at": 1_700_000_000_123, "actor": "USER", "reason": "join", "reverses_event_id": None,
}
DECODER = EventDecoder(CODEC)
text = st.text(max_size=200)  # any unicode, including control characters
longs = st.integers(-(2**63), 2**63 - 1)
events = st.fixed_dictionaries({
    "event_id": text, "command_id": text,
    "kind": st.sampled_from(["GRANTED", "EARNED", "SPENT", "JOINED", "REVERSED"]),
    "postings": st.lists(st.fixed_dictionaries({"account": text, "amount": longs}), max_size=70),
    "occurred_at": longs,
    "actor": st.sampled_from(["SYSTEM", "USER", "ADMIN"]),
    "reason": text,
    "reverses_event_id": st.none() | text,
})


def as_tuple(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["event_id"], r["command_id"], r["kind"],
            [(p["account"], p["amount"]) for p in r["postings"]], r["occurred_at"], r["actor"],
            r["reason"], r["reverses_event_id"])


def test_the_fast_path_is_the_current_event_schema() -> None:
    # If event.v1.avsc changed, its fingerprint would too and the fast path would go silent.
    assert CODEC.catalogue.by_fingerprint[FINGERPRINT].name == "event"
    assert DECODER.is_fast(CODEC.encode("event", SAMPLE))


@settings(max_examples=300)
@given(events)
def test_fast_reader_equals_codec(event: dict[str, Any]) -> None:
    data = CODEC.encode("event", event)
    assert DECODER.decode(data) == as_tuple(CODEC.decode_as("event", data)) == as_tuple(event)


@settings(max_examples=300)
@given(events, st.data())
def test_damaged_records_fail_like_the_codec(event: dict[str, Any], data: st.DataObject) -> None:
    raw = CODEC.encode("event", event)
    cut = data.draw(st.integers(11, len(raw) - 1)) if len(raw) > 11 else len(raw)
    for damaged in (raw[:cut], raw + b"\x00", raw[:cut] + b"\xff" * 3):
        assert outcome(DECODER.decode, damaged) == outcome(
            lambda d: as_tuple(CODEC.decode_as("event", d)), damaged)


def outcome(decode: Callable[[bytes], Any], data: bytes) -> Any:
    """What decode makes of data: its value, or CodecError if it refuses it."""
    try:
        return decode(data)
    except CodecError:
        return CodecError


def test_batch_keeps_good_records_and_reports_bad_ones() -> None:
    good = [CODEC.encode("event", {**SAMPLE, "occurred_at": 5}) for _ in range(3)]
    bad = good[1][:20]
    cols = EventColumns()
    failures = read_events(cols, [good[0], bad, good[2]], [0, 1, 2], [10, 11, 12])
    assert [i for i, _ in failures] == [1]
    assert cols.offset == [10, 12] and cols.partition == [0, 2]
    assert set(cols.owner) <= {0, 1}
    assert len(cols.account) == sum(len(DECODER.decode(g)[3]) for g in (good[0], good[2]))


def test_as_of_leaves_out_later_events_and_their_postings() -> None:
    def ev(at: int) -> bytes:
        return CODEC.encode("event", {**SAMPLE, "occurred_at": at,
                                      "postings": [{"account": "a", "amount": at}]})

    cols = EventColumns()
    failures = read_events(cols, [ev(1), ev(3), ev(2)], [0, 0, 0], [0, 1, 2], as_of=2)
    assert failures == []
    assert cols.occurred_at == [1, 2]
    assert cols.amount == [1, 2] and cols.owner == [0, 1]


def test_unknown_fingerprint_is_not_a_bad_record() -> None:
    data = bytearray(CODEC.encode("event", SAMPLE))
    data[2:10] = b"\x01" * 8
    with pytest.raises(UnknownFingerprintError):
        DECODER.decode(bytes(data))
    assert not DECODER.is_fast(bytes(data))


accounts = st.fixed_dictionaries({
    "account": text, "type": st.sampled_from(["USER", "ROOM", "SYSTEM"]), "floor": longs,
    "status": st.sampled_from(["OPEN", "CLOSED"]), "opened_at": longs, "command_id": text,
})
ACCOUNTS = AccountDecoder(CODEC)


@settings(max_examples=300)
@given(accounts, st.data())
def test_account_reader_equals_codec(account: dict[str, Any], data: st.DataObject) -> None:
    raw = CODEC.encode("account", account)
    assert raw[:10] == ACCOUNTS.fast_header
    assert ACCOUNTS.decode(raw) == CODEC.decode_as("account", raw) == account
    cut = data.draw(st.integers(10, len(raw)))
    for damaged in (raw[:cut], raw + b"\x00", raw[:cut] + data.draw(st.binary(max_size=8))):
        assert outcome(ACCOUNTS.decode, damaged) == outcome(
            lambda d: CODEC.decode_as("account", d), damaged)
