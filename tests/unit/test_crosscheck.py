"""Verify's independent reading of the journal: no hot decoder, same balances, repeated ids."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message

from ledger.settings import Settings
from ledger.wire import Codec
from ledger.wire.event import compiled
from projections.checksum import balance_checksum
from projections.crosscheck import Check, CrossCheck, Finding, digest
from projections.crosscheck_workers import shares
from projections.ingest import Ingest
from tests.integration.journal_factory import expected_balances, key_of, make_events

CODEC = Codec()
SETTINGS = Settings(topic_prefix="p")
EVENTS = SETTINGS.topic("events")
HOT_DECODERS = ("ledger.wire.event", "ledger.wire.account", "ledger.wire.command",
                "ledger.wire.hot", "ledger.wire._eventreader", "projections.ingest",
                "projections.rows")


def message(event: dict[str, Any], offset: int, partition: int = 0,
            key: str | None = None) -> Message:
    return Message(topic=EVENTS, partition=partition, offset=offset,
                   key=(key or key_of(event)).encode(), value=CODEC.encode("event", event))


def journal(events: list[dict[str, Any]]) -> list[Message]:
    return [message(e, i // 3, partition=i % 3) for i, e in enumerate(events)]


def cross_checked(msgs: list[Message], as_of: int | None = None) -> CrossCheck:
    """Both readings, as verify makes them: the second only if some hash repeats."""
    cross = CrossCheck(EVENTS, CODEC, as_of)
    for i in range(0, len(msgs), 7):
        cross.add(msgs[i:i + 7])
    if cross.suspect():
        cross.confirm(msgs)
    return cross


def found(cross: CrossCheck) -> dict[str, Finding]:
    return {f.check: f for f in cross.findings()}


def hot_balances(msgs: list[Message], native: bool, as_of: int | None) -> dict[str, int]:
    """Balances as the replay's decoder reads the journal."""
    ingest = Ingest(SETTINGS, CODEC, as_of=as_of, native=native)
    ingest.add(msgs)
    audit = ingest.audit()
    out: dict[str, int] = defaultdict(int)
    for account, amount in zip(audit["account"].to_pylist(), audit["amount"].to_pylist(),
                               strict=True):
        out[account] += amount
    return dict(out)


def test_the_checksum_path_imports_no_hot_decoder() -> None:
    code = ("import sys, projections.crosscheck, projections.crosscheck_workers; "
            f"print([m for m in {HOT_DECODERS!r} if m in sys.modules])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("native", [False, pytest.param(True, marks=pytest.mark.skipif(
    not compiled(), reason="extension not built"))])
@pytest.mark.parametrize("as_of", [None, 1_700_000_000_000 + 150 * 1_000])
def test_both_readings_agree_on_a_sample_journal(native: bool, as_of: int | None) -> None:
    events = make_events(400, seed=5)
    msgs = journal(events)
    msgs.append(Message(topic=EVENTS, partition=1, offset=999, value=b"not avro"))
    msgs.append(Message(topic=EVENTS, partition=0, offset=0,
                        error=KafkaError(KafkaError._PARTITION_EOF)))
    cross = cross_checked(msgs, as_of)
    hot = hot_balances(msgs, native, as_of)
    assert cross.balances == hot == expected_balances(events, as_of)
    assert cross.checksum() == balance_checksum(hot.items())
    assert cross.findings() == []


def test_readings_of_shares_merge_into_the_whole() -> None:
    events = make_events(300, seed=12)
    again = {**events[40], "event_id": "another-event"}
    msgs = [*journal(events), message(again, 400, partition=1)]  # partitions 0-2
    by_partition = {p: [m for m in msgs if m.partition() == p] for p in range(3)}
    ranges = {(EVENTS, p): (0, 1) for p in by_partition}
    merged = CrossCheck(EVENTS, CODEC)
    for share in shares(ranges, 2):
        part = CrossCheck(EVENTS, CODEC)
        for _, p in share:
            part.add(by_partition[p])
        merged.merge(part.partial())
    whole = cross_checked(msgs)
    assert merged.suspect()
    merged.confirm(msgs)
    assert merged.balances == whole.balances and merged.events == whole.events == 301
    assert merged.findings() == whole.findings() != []


def test_an_honest_journal_needs_no_second_reading() -> None:
    cross = CrossCheck(EVENTS, CODEC)
    cross.add(journal(make_events(300, seed=6)))
    assert not cross.suspect()


def test_a_record_written_twice() -> None:
    events = make_events(50, seed=7)
    msgs = [*journal(events), message(events[10], 100, partition=2)]
    f = found(cross_checked(msgs))
    assert set(f) == {"duplicate_event_id"}  # one event: not also a command decided twice
    (repeat,) = f["duplicate_event_id"].repeats
    assert repeat.value == events[10]["event_id"] and repeat.records == 2
    assert [where for where, _ in repeat.holders.values()] == [(1, 3), (2, 100)]


def test_a_command_decided_twice_by_one_key() -> None:
    events = make_events(50, seed=8)
    again = {**events[20], "event_id": "another-event"}
    f = found(cross_checked([*journal(events), message(again, 200)]))
    assert set(f) == {"duplicate_command_id"}
    (repeat,) = f["duplicate_command_id"].repeats
    assert events[20]["command_id"] in repeat.value and key_of(events[20]) in repeat.value
    assert {e for _, e in repeat.holders.values()} == {events[20]["event_id"], "another-event"}


def test_one_command_id_under_two_keys_is_legitimate() -> None:
    events = make_events(50, seed=9)
    other = {**events[20], "event_id": "another-event"}
    msgs = [*journal(events), message(other, 200, key="user:someone-else")]
    assert cross_checked(msgs).findings() == []


def test_a_target_reversed_twice() -> None:
    events = make_events(300, seed=10)
    first = next(e for e in events if e["kind"] == "REVERSED")
    second = {**first, "event_id": "second-reversal", "command_id": "second-command"}
    f = found(cross_checked([*journal(events), message(second, 300)]))
    assert set(f) == {"double_reversal"}
    (repeat,) = f["double_reversal"].repeats
    assert repeat.value == first["reverses_event_id"]
    assert {e for _, e in repeat.holders.values()} == {first["event_id"], "second-reversal"}


def test_repeats_after_as_of_are_left_out() -> None:
    events = make_events(50, seed=11)
    late = events[-1]
    cross = cross_checked([*journal(events), message(late, 500)], as_of=late["occurred_at"] - 1)
    assert cross.findings() == []


def test_the_digest_is_the_same_in_every_process() -> None:
    """Workers' digests meet the parent's: no per-process salt, as hash() has."""
    code = "from projections.crosscheck import digest; print(digest('c', b'k'), digest('e'))"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, check=True).stdout for _ in range(2)}
    assert runs == {f"{digest('c', b'k')!r} {digest('e')!r}\n"}
    assert digest("c", b"ab") != digest("bc", b"a")  # the key is delimited


def test_a_hash_collision_is_not_reported() -> None:
    check = Check("duplicate_event_id", by_record=True)
    check.hashes.add([b"7" * 8, b"3" * 8, b"7" * 8])
    assert check.suspect() and check.suspects == {b"7" * 8}
    check.confirm("a", "a", (0, 1))
    check.confirm("b", "b", (0, 2))  # another value with the same hash
    assert check.finding().count == 0


def test_suspects_are_capped() -> None:
    check = Check("duplicate_event_id", by_record=True)
    check.hashes.add([digest(str(i)) for i in range(10)] * 2)
    suspects, more = check.hashes.repeated(limit=4)
    assert len(suspects) == 4 and more
