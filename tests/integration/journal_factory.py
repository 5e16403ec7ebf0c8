"""Test journals: random balanced events written with a transactional producer.

The factory plays the command processor's part on the wire: journal events on
<prefix>.events keyed by the deciding account, account states on
<prefix>.accounts and balance snapshots on <prefix>.balances, all inside Kafka
transactions, with aborted transactions in between so that offsets have holes.
Aborted events post to accounts that never occur in committed ones
(`user:aborted-*`), so a projection that leaks them is caught.

Expected projections are computed here in plain Python, independently of the
code under test.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ledger.errors import CodecError
from ledger.kafka import make_producer
from ledger.settings import Settings
from ledger.wire import Codec

START_MS = 1_700_000_000_000
STEP_MS = 1_000
Event = dict[str, Any]


@dataclass
class Written:
    """Where one committed record landed."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


@dataclass
class Journal:
    """The committed events in production order, with their coordinates after writing."""

    events: list[Event]
    accounts: list[dict[str, Any]]
    aborted: list[Event] = field(default_factory=list)
    coordinates: dict[str, tuple[int, int]] = field(default_factory=dict)  # event_id -> (p, o)

    def balances(self, as_of: int | None = None) -> dict[str, int]:
        return expected_balances(self.events, as_of)

    def postings(self) -> Counter[tuple[str, str, int]]:
        """Multiset of (event_id, account, amount) over every committed posting."""
        return Counter(
            (e["event_id"], p["account"], p["amount"]) for e in self.events for p in e["postings"]
        )

    def last_ms(self) -> int:
        return max(int(e["occurred_at"]) for e in self.events)


def expected_balances(events: Iterable[Event], as_of: int | None = None) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for e in events:
        if as_of is not None and e["occurred_at"] > as_of:
            continue
        for p in e["postings"]:
            out[p["account"]] += p["amount"]
    return dict(out)


def account_type(account: str) -> str:
    return account.split(":", 1)[0].upper()


def key_of(event: Event) -> str:
    """The deciding account: the debited user or room, else the credited one."""
    debited = [p["account"] for p in event["postings"] if p["amount"] < 0]
    for acc in debited:
        if not acc.startswith("system:"):
            return str(acc)
    credited = [p["account"] for p in event["postings"] if p["amount"] > 0]
    return str(credited[0] if credited else debited[0])


def _event(kind: str, postings: list[tuple[str, int]], ms: int, rng: random.Random,
           reverses: str | None = None) -> Event:
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "command_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "kind": kind,
        "postings": [{"account": a, "amount": n} for a, n in postings],
        "occurred_at": ms,
        "actor": rng.choice(("USER", "SYSTEM", "ADMIN")),
        "reason": rng.choice(("study verified", "room fee", "shop\titem, \"quoted\"\n", "")),
        "reverses_event_id": reverses,
    }


def make_events(n: int, users: int = 40, rooms: int = 8, seed: int = 0,
                start_ms: int = START_MS, step_ms: int = STEP_MS) -> list[Event]:
    """n balanced events that never overdraw a user or room, in time order."""
    rng = random.Random(seed)
    bal: dict[str, int] = defaultdict(int)
    earned: list[Event] = []
    out: list[Event] = []
    for i in range(n):
        ms = start_ms + i * step_ms
        user = f"user:u{rng.randrange(users)}"
        room = f"room:r{rng.randrange(rooms)}"
        amount = rng.randint(1, 500)
        roll = rng.random()
        if roll < 0.15 and bal[user] >= amount:
            e = _event("SPENT", [(user, -amount), ("system:spent", amount)], ms, rng)
        elif roll < 0.30 and bal[user] >= amount:
            e = _event("JOINED", [(user, -amount), (room, amount)], ms, rng)
        elif roll < 0.35 and bal[room] >= amount:
            e = _event("SPENT", [(room, -amount), ("system:spent", amount)], ms, rng)
        elif roll < 0.40 and earned:
            e = _reversal(earned, bal, ms, rng) or _earn(user, amount, ms, rng)
        elif roll < 0.45:
            e = _event("GRANTED", [("system:grants", -amount), (room, amount)], ms, rng)
        else:
            e = _earn(user, amount, ms, rng)
        if e["kind"] == "EARNED":
            earned.append(e)
        for p in e["postings"]:
            bal[p["account"]] += p["amount"]
        out.append(e)
    return out


def _earn(user: str, amount: int, ms: int, rng: random.Random) -> Event:
    return _event("EARNED", [("system:rewards", -amount), (user, amount)], ms, rng)


def _reversal(earned: list[Event], bal: dict[str, int], ms: int,
              rng: random.Random) -> Event | None:
    victim = earned.pop(rng.randrange(len(earned)))
    postings = [(p["account"], -p["amount"]) for p in victim["postings"]]
    if any(not a.startswith("system:") and bal[a] + n < 0 for a, n in postings):
        return None
    return _event("REVERSED", postings, ms, rng, reverses=victim["event_id"])


def make_accounts(events: Sequence[Event], start_ms: int = START_MS) -> list[dict[str, Any]]:
    """An account state for every user and room the events touch (system ones too)."""
    first: dict[str, int] = {}
    for e in events:
        for p in e["postings"]:
            first.setdefault(p["account"], e["occurred_at"])
    return [
        {"account": a, "type": account_type(a), "floor": 0, "status": "OPEN",
         "opened_at": min(ms, start_ms) if a.startswith("system:") else ms - 1,
         "command_id": f"open-{a}"}
        for a, ms in sorted(first.items())
    ]


def make_journal(n: int, seed: int = 0, **kw: Any) -> Journal:
    events = make_events(n, seed=seed, **kw)
    aborted = [
        _event("EARNED", [("system:rewards", -7), (f"user:aborted-{i}", 7)], START_MS,
               random.Random(i))
        for i in range(max(3, n // 50))
    ]
    return Journal(events=events, accounts=make_accounts(events), aborted=aborted)


class JournalWriter:
    """A transactional producer that plays the processor on the wire."""

    def __init__(self, settings: Settings, codec: Codec | None = None,
                 transactional_id: str | None = None) -> None:
        self.settings = settings
        self.codec = codec or Codec()
        self.producer: Producer = make_producer(
            settings, transactional_id=transactional_id or f"test-{uuid.uuid4().hex[:12]}"
        )
        self._init()
        self.written: list[Written] = []

    def _init(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                self.producer.init_transactions(30)
                return
            except KafkaException as e:  # coordinator load in progress at first use
                if time.monotonic() > deadline or not e.args[0].retriable():
                    raise
                time.sleep(0.5)

    def transaction(self, records: Iterable[tuple[str, bytes | None, bytes | None]],
                    abort: bool = False) -> None:
        """Write (topic, key, value) records in one transaction, committed or aborted."""
        pending: list[Written] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                raise KafkaException(err)
            pending.append(Written(msg.topic() or "", msg.partition() or 0, msg.offset() or 0,
                                   msg.key() or b"", msg.value() or b""))

        self.producer.begin_transaction()
        for n, (topic, key, value) in enumerate(records, 1):
            self.producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            if n % 5000 == 0:
                self.producer.poll(0)
        self.producer.flush(60)
        if abort:
            self.producer.abort_transaction(60)
        else:
            self.producer.commit_transaction(60)
            self.written.extend(pending)

    def event_records(self, events: Iterable[Event]) -> list[tuple[str, bytes, bytes]]:
        topic = self.settings.topic("events")
        return [(topic, key_of(e).encode(), self.codec.encode("event", e)) for e in events]

    def account_records(self, accounts: Iterable[dict[str, Any]]) -> list[tuple[str, bytes, bytes]]:
        topic = self.settings.topic("accounts")
        return [(topic, a["account"].encode(), self.codec.encode("account", a)) for a in accounts]

    def balance_records(self, balances: dict[str, int],
                        ms: int = START_MS) -> list[tuple[str, bytes, bytes]]:
        topic = self.settings.topic("balances")
        return [
            (topic, acc.encode(), self.codec.encode("balance", {
                "account": acc, "balance": amount, "floor": 0, "is_open": True,
                "type": account_type(acc), "updated_at": ms, "last_event_id": None}))
            for acc, amount in sorted(balances.items()) if not acc.startswith("system:")
        ]

    def write_journal(self, journal: Journal, txn_size: int = 1000, abort_every: int = 3,
                      balances: bool = True) -> Journal:
        """Accounts, then events in transactions with an aborted one every few; then balances."""
        self.transaction(self.account_records(journal.accounts))
        aborted = iter(self.event_records(journal.aborted))
        for i in range(0, len(journal.events), txn_size):
            self.transaction(self.event_records(journal.events[i:i + txn_size]))
            if (i // txn_size) % abort_every == 0:
                self.transaction([r for r, _ in zip(aborted, range(3), strict=False)], abort=True)
        if balances:
            self.transaction(self.balance_records(journal.balances(), journal.last_ms()))
        self._record_coordinates(journal)
        return journal

    def _record_coordinates(self, journal: Journal) -> None:
        events_topic = self.settings.topic("events")
        wanted = {e["event_id"] for e in journal.events}
        for w in self.written:
            if w.topic != events_topic:
                continue
            try:
                eid = self.codec.decode_as("event", w.value)["event_id"]
            except CodecError:  # a poison record written on purpose
                continue
            if eid in wanted:
                journal.coordinates[eid] = (w.partition, w.offset)

    def close(self) -> None:
        self.producer.flush(30)

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_journal(settings: Settings, n: int, seed: int = 0, txn_size: int = 1000,
                  **kw: Any) -> Journal:
    """Generate and write a random journal of n events; returns what was committed."""
    journal = make_journal(n, seed=seed, **kw)
    with JournalWriter(settings) as w:
        w.write_journal(journal, txn_size=txn_size)
    return journal


# -- stores and the CLI --------------------------------------------------------------------

def fresh_pg_url(postgres_url: str) -> str:
    """The test Postgres with a new, empty schema first on the search path."""
    import psycopg
    from sqlalchemy.engine import make_url

    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = make_url(postgres_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username,
                         password=url.password, dbname=url.database, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return str(url.update_query_dict({"options": f"-csearch_path={schema}"})
               .render_as_string(hide_password=False))


def ledger_argv(settings: Settings, store: str | None = None, *extra: str) -> list[str]:
    """`ledger` with the settings' broker, prefix and store, as a subprocess argv."""
    import sys

    return [sys.executable, "-m", "cli.main", "--bootstrap", settings.bootstrap,
            "--topic-prefix", settings.topic_prefix, "--store", store or settings.store, *extra]


def store_state(store: Any) -> tuple[dict[str, int], Counter[tuple[Any, ...]]]:
    """(balances, multiset of audit rows) of a SqlProjectionStore, for exact comparisons."""
    balances = {a: int(b) for a, b in store.sql("SELECT account, balance FROM balances")}
    rows = store.sql('SELECT event_id, command_id, kind, posting, account, amount, actor, reason, '
                     'occurred_at, reverses_event_id, topic, "partition", "offset" FROM audit_log')
    return balances, Counter(tuple(r) for r in rows)


def expected_audit(journal: Journal, topic: str) -> Counter[tuple[str, str, int, int, int]]:
    """Multiset of (event_id, account, amount, partition, offset) the audit log must hold."""
    out: Counter[tuple[str, str, int, int, int]] = Counter()
    for e in journal.events:
        p, o = journal.coordinates[e["event_id"]]
        for posting in e["postings"]:
            out[(e["event_id"], posting["account"], posting["amount"], p, o)] += 1
    return out


def audit_keys(rows: Counter[tuple[Any, ...]]) -> Counter[tuple[str, str, int, int, int]]:
    """The (event_id, account, amount, partition, offset) of store_state's audit rows."""
    out: Counter[tuple[str, str, int, int, int]] = Counter()
    for r, n in rows.items():
        out[(r[0], r[4], int(r[5]), int(r[11]), int(r[12]))] += n
    return out
