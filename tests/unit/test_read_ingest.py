"""A batch of consumed messages gives the same rows with or without the compiled reader."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from confluent_kafka import KafkaError, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.settings import Settings
from ledger.wire import Codec
from ledger.wire.event import compiled
from projections.ingest import Ingest
from projections.rows import BalanceAccumulator
from projections.store import BALANCE_SCHEMA
from tests.unit.test_read_decode import SAMPLE, events

pytestmark = pytest.mark.skipif(not compiled(), reason="extension not built")
CODEC = Codec()
SETTINGS = Settings(topic_prefix="p")
EVENTS, ACCOUNTS = SETTINGS.topic("events"), SETTINGS.topic("accounts")
ACCOUNT = {"account": "user:a", "type": "USER", "floor": 0, "status": "OPEN",
           "opened_at": 5, "command_id": "c"}


def message(topic: str, offset: int, value: bytes | None, partition: int = 0,
            error: KafkaError | None = None) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, value=value, error=error)


def ingest(msgs: list[Message], native: bool, as_of: int | None = None) -> dict[str, Any]:
    ing = Ingest(SETTINGS, CODEC, as_of=as_of, native=native)
    for i in range(0, len(msgs), 3):  # several consume calls into one batch
        ing.add(msgs[i:i + 3])
    audit = ing.audit()
    order = pa.compute.sort_indices(audit, [("partition", "ascending"), ("offset", "ascending"),
                                            ("posting", "ascending")])
    return {"audit": audit.take(order), "accounts": ing.accounts, "later": ing.later,
            "events": ing.event_count, "records": len(ing),
            "bad": sorted((b.partition, b.offset) for b in ing.bad),
            "partitions": ing.partitions()}


def mixed_batch(event_list: list[dict[str, Any]]) -> list[Message]:
    msgs = [message(EVENTS, i, CODEC.encode("event", e), partition=i % 3)
            for i, e in enumerate(event_list)]
    msgs.insert(1, message(ACCOUNTS, 0, CODEC.encode("account", ACCOUNT), partition=4))
    msgs.append(message(EVENTS, 100, b"not avro at all", partition=2))  # the codec path
    msgs.append(message(EVENTS, 101, CODEC.encode("event", SAMPLE)[:-3], partition=1))
    msgs.append(message(EVENTS, 102, None, partition=5))
    msgs.append(message(EVENTS, 0, None, partition=6,
                        error=KafkaError(KafkaError._PARTITION_EOF)))
    return msgs


@settings(max_examples=60)
@given(st.lists(events, max_size=10), st.none() | st.integers(-(2**40), 2**40))
def test_native_and_python_batches_agree(event_list: list[dict[str, Any]],
                                         as_of: int | None) -> None:
    msgs = mixed_batch(event_list)
    python, native = ingest(msgs, False, as_of), ingest(msgs, True, as_of)
    assert native["audit"].equals(python["audit"])
    assert {k: v for k, v in native.items() if k != "audit"} == \
        {k: v for k, v in python.items() if k != "audit"}


def test_bad_and_skipped_records_are_accounted_for() -> None:
    got = ingest(mixed_batch([SAMPLE, SAMPLE]), True)
    assert got["events"] == 2 and got["records"] == 7
    assert got["bad"] == [(1, 101), (2, 100), (5, 102)]
    assert got["accounts"] == {"user:a": ACCOUNT}
    assert (EVENTS, 0) in got["partitions"] and (ACCOUNTS, 4) in got["partitions"]


@given(st.lists(st.lists(st.tuples(st.sampled_from("abcdefg"), st.integers(-50, 50)),
                         max_size=6), max_size=12))
def test_accumulator_keeps_sums(batches: list[list[tuple[str, int]]]) -> None:
    acc = BalanceAccumulator()
    expected: dict[str, int] = {}
    for rows in batches:
        sums: dict[str, int] = {}
        for account, amount in rows:
            sums[account] = sums.get(account, 0) + amount
            expected[account] = expected.get(account, 0) + amount
        acc.add(pa.table([list(sums), list(sums.values()), ["USER"] * len(sums),
                          [1] * len(sums), [0] * len(sums)], schema=BALANCE_SCHEMA))
    assert dict(acc.pairs()) == expected and len(acc) == len(expected)


def test_a_batch_opened_by_a_consume_without_events_writes_clean_csv() -> None:
    """The compiled reader gives an empty chunk for a consume call of account records only;
    Arrow's CSV writer (the Postgres store's COPY) wrote NUL bytes over the start of a table
    whose first record batch was empty (a two-projector run saw Postgres refuse 0x00)."""
    ing = Ingest(SETTINGS, CODEC, native=True)
    ing.add([message(ACCOUNTS, 0, CODEC.encode("account", ACCOUNT), partition=4)])
    ing.add([message(EVENTS, i, CODEC.encode("event", SAMPLE)) for i in range(3)])
    out = pa.BufferOutputStream()
    pacsv.write_csv(ing.audit(), out, pacsv.WriteOptions(include_header=False))
    csv = out.getvalue().to_pybytes()
    assert b"\x00" not in csv
    assert csv.count(b"\n") == 6 and csv.startswith(b'"e-1","c-1","JOINED",0,"user:a",-30,')
