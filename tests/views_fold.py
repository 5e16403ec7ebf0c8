"""The analysts' views computed in plain Python from the journal, and a store filled with it.

Tests hold every store's and snapshot's views (projections/views.py) to these folds:
nothing here shares code with the SQL under test.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ledger.wire.event import EventColumns
from projections.rows import account_table, audit_table, balance_deltas
from projections.store import Batch, PositionKey, ProjectionStore
from tests.integration.journal_factory import Event, key_of, make_accounts, make_events

TOPIC = "demo.events"
ACCOUNTS_TOPIC = "demo.accounts"
HOUR_MS = 3_600_000


def day_of(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date()


def demo_like_events(n: int = 600, seed: int = 7) -> list[Event]:
    """Events of every kind over some three weeks (one every ~50 minutes), so accounts have
    days without postings and days with several; grants come from system:rewards, as the
    processor's do."""
    events = make_events(n, users=25, rooms=5, seed=seed, step_ms=50 * 60 * 1000)
    for e in events:
        for p in e["postings"]:
            if p["account"] == "system:grants":
                p["account"] = "system:rewards"
    return events


def placed(events: Sequence[Event], partitions: int = 3) -> list[tuple[Event, int, int]]:
    """(event, partition, offset) as a processor would write them: keyed by the deciding
    account, offsets with holes (a transaction marker after every fourth record)."""
    next_offset = [0] * partitions
    out = []
    for e in events:
        p = zlib.crc32(key_of(e).encode()) % partitions
        out.append((e, p, next_offset[p]))
        next_offset[p] += 2 if next_offset[p] % 4 == 3 else 1
    return out


def _columns(rows: Iterable[tuple[Event, int, int]]) -> EventColumns:
    cols = EventColumns()
    for e, p, o in rows:
        postings = [(x["account"], x["amount"]) for x in e["postings"]]
        cols.add((e["event_id"], e["command_id"], e["kind"], postings, e["occurred_at"],
                  e["actor"], e["reason"], e["reverses_event_id"]), p, o)
    return cols


def fill_store(store: ProjectionStore, events: Sequence[Event], partitions: int = 3,
               batch_events: int = 97, start: int = 0) -> dict[PositionKey, int]:
    """Project events[start:] into store as the live projector would, batch by batch (the
    ones before start were projected before); the positions reached (next offsets, holes
    included)."""
    rows = placed(events, partitions)[start:]
    accounts = [a for a in make_accounts(events) if a["type"] != "SYSTEM"]  # never opened
    keys = [(TOPIC, p) for p in range(partitions)] + [(ACCOUNTS_TOPIC, 0)]
    positions = store.claim_positions(keys)
    first = True
    for i in range(0, len(rows), batch_events):
        chunk = rows[i:i + batch_events]
        moved = dict(positions)
        for _, p, o in chunk:
            moved[(TOPIC, p)] = max(moved[(TOPIC, p)], o + 1)
        if first:
            moved[(ACCOUNTS_TOPIC, 0)] = len(accounts)
        audit = audit_table(_columns(chunk), TOPIC)
        store.apply_batch(Batch(
            audit=audit, deltas=balance_deltas(audit),
            accounts=account_table(accounts) if first else None,
            positions={k: (positions[k], v) for k, v in moved.items() if v != positions[k]}))
        positions, first = moved, False
    return positions


# -- the folds --------------------------------------------------------------------------

def postings(events: Iterable[Event]) -> Iterable[tuple[Event, str, int]]:
    for e in events:
        for x in e["postings"]:
            yield e, x["account"], x["amount"]


def daily_balances(events: Sequence[Event]) -> dict[tuple[str, date], tuple[int, int, int]]:
    """(account, day) -> (balance at the day's end, change that day, postings that day),
    every day from the account's first posting to the last day of the journal."""
    change: dict[tuple[str, date], int] = defaultdict(int)
    count: dict[tuple[str, date], int] = defaultdict(int)
    first: dict[str, date] = {}
    for e, account, amount in postings(events):
        day = day_of(e["occurred_at"])
        change[(account, day)] += amount
        count[(account, day)] += 1
        first[account] = min(first.get(account, day), day)
    last = max(day for _, day in change)
    out = {}
    for account, day in first.items():
        balance = 0
        while day <= last:
            balance += change.get((account, day), 0)
            out[(account, day)] = (balance, change.get((account, day), 0),
                                   count.get((account, day), 0))
            day += timedelta(days=1)
    return out


ACTIVITY = ("earned", "granted", "spent", "fees_paid", "reversed", "change", "postings")


def user_activity(events: Sequence[Event]) -> dict[tuple[str, date], tuple[int, ...]]:
    """(user, day) -> earned, granted, spent, fees paid, reversed, change, postings."""
    out: dict[tuple[str, date], list[int]] = defaultdict(lambda: [0] * len(ACTIVITY))
    column = {"EARNED": 0, "GRANTED": 1, "SPENT": 2, "JOINED": 3, "REVERSED": 4}
    for e, account, amount in postings(events):
        if not account.startswith("user:"):
            continue
        row = out[(account, day_of(e["occurred_at"]))]
        i = column[e["kind"]]
        row[i] += -amount if e["kind"] in ("SPENT", "JOINED") else amount
        row[5] += amount
        row[6] += 1
    return {k: tuple(v) for k, v in out.items()}


ROOM = ("members_joined", "joins", "fees_collected", "points_spent", "points_earned",
        "reversed", "balance")


def room_summary(events: Sequence[Event]) -> dict[str, tuple[int, ...]]:
    """room -> members joined, joins, fees collected, points spent, points earned,
    reversed, balance; every room an event touches."""
    members: dict[str, set[str]] = defaultdict(set)
    out: dict[str, list[int]] = defaultdict(lambda: [0] * len(ROOM))
    for e in events:
        users = [x["account"] for x in e["postings"] if x["account"].startswith("user:")]
        for x in e["postings"]:
            room, amount = x["account"], x["amount"]
            if not room.startswith("room:"):
                continue
            row = out[room]
            if e["kind"] == "JOINED":
                members[room].update(users)
                row[1] += 1
                row[2] += amount
            elif e["kind"] == "SPENT":
                row[3] -= amount
            elif e["kind"] in ("EARNED", "GRANTED"):
                row[4] += amount
            elif e["kind"] == "REVERSED":
                row[5] += amount
            row[6] += amount
    for room, row in out.items():
        row[0] = len(members[room])
    return {k: tuple(v) for k, v in out.items()}


def freshness(events: Sequence[Event], partitions: int = 3
              ) -> dict[tuple[str, int], tuple[int | None, int | None]]:
    """(topic, partition) -> (last offset, last event's epoch ms) of the events topic."""
    out: dict[tuple[str, int], tuple[int | None, int | None]] = {
        (TOPIC, p): (None, None) for p in range(partitions)}
    for e, p, o in placed(events, partitions):
        _, last_ms = out[(TOPIC, p)]
        out[(TOPIC, p)] = (o, max(last_ms or 0, e["occurred_at"]))
    return out


def as_ms(value: Any) -> int:
    """A TIMESTAMP read back from a store (naive, UTC) as epoch ms."""
    return int(value.replace(tzinfo=UTC).timestamp() * 1000)
