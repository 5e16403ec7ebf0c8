"""A fast generator of valid journal events, written the way the processor writes them.

Every event is balanced, never overdraws a user or room (the generator keeps the
balances), has a deterministic UUID event id and command id, and a strictly
increasing occurred_at. Events are keyed by the deciding account (the debited user
or room, else the credited one), so no record is keyed by a hot system account.

Values are Avro single-object records of event.v1 (the current event schema), assembled from
pre-encoded pieces instead of going through fastavro (which costs ~5 us a record):
the first CHECKED events are also encoded with the codec and must match byte for byte.
Account states go on <prefix>.accounts first; then the events in large transactions.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from ledger.kafka import make_producer
from ledger.settings import Settings
from ledger.wire import Codec, event
from ledger.wire.avro import long_bytes, string_bytes

START_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z; event i occurred at START_MS + i
GRANT = 1_000
MAX_AMOUNT = 100
CHECKED = 500
SYSTEM_ACCOUNTS = ("system:rewards", "system:spent")
# Ids look like the real ones, random to a compressor: the processor's event ids are
# UUIDv5 hashes and clients' command ids typically UUIDv4. (Sequential ids, used before,
# made DuckDB's string columns ~30% cheaper to store than real ones.)
UUID_BITS = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)  # version and variant cleared
REASONS = {
    "GRANTED": "signup grant",
    "EARNED": "study session verified",
    "SPENT": "reward shop",
    "JOINED": "joined study room",
}
ACTORS = {"GRANTED": "SYSTEM", "EARNED": "SYSTEM", "SPENT": "USER", "JOINED": "USER"}
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Shape:
    """How big the journal is and who it moves points between."""

    events: int
    users: int
    rooms: int
    seed: int = 42

    @classmethod
    def for_events(cls, events: int, seed: int = 42) -> Shape:
        """100k users and 1k rooms at full size; fewer when the journal is small."""
        users = max(10, min(100_000, events // 10))
        return cls(events, users, max(1, min(1_000, users // 100)), seed)

    def user(self, i: int) -> str:
        return f"user:u{i}"

    def room(self, i: int) -> str:
        return f"room:r{i}"

    def accounts(self) -> list[str]:
        return ([self.user(i) for i in range(self.users)]
                + [self.room(i) for i in range(self.rooms)] + list(SYSTEM_ACCOUNTS))


@dataclass
class Generated:
    """What the generator wrote."""

    events: int = 0
    accounts: int = 0
    postings: int = 0
    bytes: int = 0
    transactions: int = 0
    seconds: float = 0.0
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def account_record(account: str, opened_at: int) -> dict[str, Any]:
    return {"account": account, "type": account.split(":", 1)[0].upper(), "floor": 0,
            "status": "OPEN", "opened_at": opened_at, "command_id": f"open-{account}"}


def events(shape: Shape, codec: Codec) -> Iterator[tuple[bytes, bytes, str]]:
    """(key, value, kind) of every event, in order. Pure: no Kafka."""
    header = event.HEADER  # the pieces below are event.v1's layout
    rng = random.Random(shape.seed)
    rnd = rng.random
    users, rooms = shape.users, shape.rooms
    names = [shape.user(i) for i in range(users)] + [shape.room(i) for i in range(rooms)]
    keys = [n.encode() for n in names]
    acc = [string_bytes(n) for n in names]
    rewards, spent = string_bytes(SYSTEM_ACCOUNTS[0]), string_bytes(SYSTEM_ACCOUNTS[1])
    amt = {v: long_bytes(v) for v in range(-GRANT, GRANT + 1)}
    tails = {k: bytes([2 * event.ACTORS.index(ACTORS[k])]) + string_bytes(r) + b"\x00"
             for k, r in REASONS.items()}
    kind_byte = {k: bytes([2 * event.KINDS.index(k)]) for k in REASONS}
    low = [bytes([b | 0x80]) for b in range(128)]
    bits = rng.getrandbits
    bal = [0] * (users + rooms)
    last_hi, hi_bytes = -1, b""
    for i in range(shape.events):
        zz = (START_MS + i) << 1
        if zz >> 7 != last_hi:
            last_hi = zz >> 7
            hi_bytes = long_bytes(START_MS + i)[1:]  # all but the low 7 bits' byte
        event_id, command_id = uuid_text(bits(128), 5), uuid_text(bits(128), 4)
        r = rnd()
        u = int(rnd() * users)
        a = 1 + int(rnd() * MAX_AMOUNT)
        if i < users:
            kind, u, a = "GRANTED", i, GRANT
            debit, credit, key = rewards, acc[u], u
            bal[u] += a
        elif r < 0.25 and bal[u] >= a:
            kind, debit, credit, key = "SPENT", acc[u], spent, u
            bal[u] -= a
        elif r < 0.45 and bal[u] >= a:
            room = users + int(rnd() * rooms)
            kind, debit, credit, key = "JOINED", acc[u], acc[room], u
            bal[u] -= a
            bal[room] += a
        elif r < 0.50 and bal[users + u % rooms] >= a:
            room = users + u % rooms
            kind, debit, credit, key = "SPENT", acc[room], spent, room
            bal[room] -= a
        else:
            kind, debit, credit, key = "EARNED", rewards, acc[u], u
            bal[u] += a
        value = b"".join((header, b"\x48", event_id, b"\x48", command_id, kind_byte[kind],
                          b"\x04", debit, amt[-a], credit, amt[a], b"\x00", low[zz & 0x7F],
                          hi_bytes, tails[kind]))
        if i < CHECKED:
            _check(codec, value, i, (event_id.decode(), command_id.decode()), kind, debit,
                   credit, a)
        yield keys[key], value, kind


def uuid_text(bits: int, version: int) -> bytes:
    """128 random bits as a UUID of that version (RFC 4122 variant), in its text form."""
    h = b"%032x" % (bits & UUID_BITS | version << 76 | 0x2 << 62)
    return b"-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))


def _check(codec: Codec, value: bytes, i: int, ids: tuple[str, str], kind: str, debit: bytes,
           credit: bytes, amount: int) -> None:
    """The hand-assembled record must equal the codec's encoding of the same event."""
    def name(enc: bytes) -> str:
        return enc[1:].decode()

    record = {"event_id": ids[0], "command_id": ids[1], "kind": kind,
              "postings": [{"account": name(debit), "amount": -amount},
                           {"account": name(credit), "amount": amount}],
              "occurred_at": START_MS + i,
              "actor": ACTORS[kind],
              "reason": REASONS[kind], "reverses_event_id": None}
    expected = codec.encode("event", record)
    if value != expected:
        raise AssertionError(f"generator encodes event {i} differently from the codec: "
                             f"{value.hex()} != {expected.hex()}")
    for text, version in zip(ids, (5, 4), strict=True):
        if uuid.UUID(text).version != version or uuid.UUID(text).variant != uuid.RFC_4122:
            raise AssertionError(f"generator made a malformed UUID: {text}")


def produce_retrying(producer: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.005)


def transactional_producer(settings: Settings, name: str) -> Producer:
    """A transactional producer, waiting out 'coordinator load in progress'."""
    producer = make_producer(settings, transactional_id=f"{settings.topic_prefix}.{name}")
    deadline = time.monotonic() + 180  # a fresh broker creates its transaction log first
    while True:
        try:
            producer.init_transactions(30)
            return producer
        except KafkaException as e:
            err = e.args[0]
            again = err.retriable() or err.code() == KafkaError._TIMED_OUT
            if time.monotonic() > deadline or not again:
                raise
            time.sleep(0.5)


def write_journal(settings: Settings, shape: Shape, codec: Codec | None = None,
                  txn_size: int = 250_000, progress: Progress | None = None) -> Generated:
    """Accounts (one transaction), then the events in transactions of txn_size."""
    codec = codec or Codec()
    out = Generated()
    producer = transactional_producer(settings, "bench-generator")
    started = time.monotonic()
    accounts_topic, events_topic = settings.topic("accounts"), settings.topic("events")
    producer.begin_transaction()
    for name in shape.accounts():
        produce_retrying(producer, accounts_topic, name.encode(),
                 codec.encode("account", account_record(name, START_MS - 1)))
        out.accounts += 1
    producer.commit_transaction(120)
    out.transactions += 1
    open_txn = False
    for n, (key, value, kind) in enumerate(events(shape, codec)):
        if not open_txn:
            producer.begin_transaction()
            open_txn = True
        produce_retrying(producer, events_topic, key, value)
        out.kinds[kind] += 1
        out.bytes += len(value)
        if (n + 1) % txn_size == 0:
            producer.commit_transaction(120)
            out.transactions += 1
            open_txn = False
            if progress:
                progress(n + 1, shape.events)
    if open_txn:
        producer.commit_transaction(120)
        out.transactions += 1
    out.events = shape.events
    out.postings = 2 * shape.events
    out.seconds = time.monotonic() - started
    if progress:
        progress(shape.events, shape.events)
    return out
