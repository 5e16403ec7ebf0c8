"""The projector's logic on the in-memory adapters and a real DuckDB store, with no broker.

Resuming at stored positions, rows and positions together, dead letters before their
batch, a zombie's conflict, revocation and loss mid-batch, a log that lost records."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ledger.errors import InfrastructureError, StoreError
from ledger.settings import Settings
from ledger.wire import Codec
from ledger.wiring import build_projector
from projections.factory import open_store
from projections.memory import InMemoryDeadLetterSink, InMemoryJournal, InMemoryJournalSource
from projections.projector import Projector
from projections.store import Batch, PositionKey
from tests.integration.journal_factory import (
    expected_balances,
    key_of,
    make_accounts,
    make_events,
    store_state,
)

PARTITIONS = 3
CODEC = Codec()


class Store:
    """A DuckDB store, seen by the projector through this wrapper: `before_batch` runs
    ahead of each batch, `batches` records what each carried; `shared` poses as a store
    several processes write (as Postgres), so the projector joins a group."""

    def __init__(self, store: Any, shared: bool = False) -> None:
        self.store, self.shared = store, shared
        self.before_batch: Callable[[Batch], None] | None = None
        self.batches: list[Batch] = []

    def apply_batch(self, batch: Batch) -> None:
        if self.before_batch is not None:
            self.before_batch(batch)
        self.store.apply_batch(batch)
        self.batches.append(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class Kit:
    """An in-memory journal, a DuckDB store, and projectors of the one into the other."""

    def __init__(self, tmp_path: Path) -> None:
        self.journal = InMemoryJournal(PARTITIONS)
        self.settings = Settings(topic_prefix="unit", partitions=PARTITIONS, home=tmp_path,
                                 store=f"duckdb:///{tmp_path / 'p.duckdb'}")
        self.db = open_store(self.settings.store)
        self.events: list[dict[str, Any]] = []

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def write(self, n: int, seed: int = 0) -> list[dict[str, Any]]:
        """n more events, and the accounts they open (accounts first, as the processor)."""
        start = 1_700_000_000_000 + len(self.events) * 1000
        events = make_events(n, seed=seed, start_ms=start)
        for a in make_accounts(events, start_ms=start):
            self.journal.produce(self.topic("accounts"), CODEC.encode("account", a),
                                 a["account"].encode())
        for e in events:
            self.journal.produce(self.topic("events"), CODEC.encode("event", e),
                                 key_of(e).encode())
        self.events.extend(events)
        return events

    def projector(self, store: Store | None = None, **kw: Any) -> Projector:
        kw.setdefault("until_caught_up", True)
        return build_projector(self.settings, store or Store(self.db), memory=self.journal,
                               **kw)

    def ends(self) -> dict[PositionKey, int]:
        return {(self.topic(t), p): len(self.journal.log(self.topic(t), p))
                for t in ("accounts", "events") for p in range(PARTITIONS)}

    def audit_offsets(self) -> dict[int, list[int]]:
        """The journal offsets in audit_log, per events partition (one per posting)."""
        out: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        for p, o in self.db.sql('SELECT "partition", "offset" FROM audit_log ORDER BY 1, 2'):
            out[int(p)].append(int(o))
        return out

    def assert_exact(self) -> None:
        balances, rows = store_state(self.db)
        assert balances == expected_balances(self.events)
        assert max(rows.values()) == 1  # no audit row twice
        assert sum(rows.values()) == sum(len(e["postings"]) for e in self.events)
        assert self.db.positions() == self.ends()


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    k = Kit(tmp_path)
    yield k
    k.db.close()


def test_projects_the_journal_exactly(kit: Kit) -> None:
    kit.write(300)
    stats = kit.projector(batch_records=50).run()
    kit.assert_exact()
    assert stats.events == 300 and stats.batches > 1


def test_a_new_projector_resumes_at_the_stored_positions(kit: Kit) -> None:
    kit.write(200)
    kit.projector().run()
    stored = kit.db.positions()
    kit.write(50, seed=1)
    stats = kit.projector().run()
    new_records = sum(end - stored[k] for k, end in kit.ends().items())
    assert stats.records == new_records  # only what came after the stored positions
    kit.assert_exact()


def test_each_batch_moves_rows_and_positions_together(kit: Kit) -> None:
    """After every batch, audit_log holds exactly the events below the stored positions."""
    kit.write(240)
    store = Store(kit.db)
    events = kit.topic("events")

    def check(_batch: Batch) -> None:  # what the batches before this one left
        offsets = kit.audit_offsets()
        stored = kit.db.positions()
        for p in range(PARTITIONS):
            assert set(offsets[p]) == set(range(stored.get((events, p), 0)))

    store.before_batch = check
    kit.projector(store, batch_records=37).run()
    assert len(store.batches) > 3
    check(store.batches[-1])
    kit.assert_exact()


def test_a_bad_record_is_dead_lettered_and_skipped(kit: Kit) -> None:
    kit.write(30)
    bad = kit.journal.produce(kit.topic("events"), b"not an event", b"user:x", 1)
    kit.write(30, seed=2)
    stats = kit.projector().run()
    assert stats.dead_letters == 1
    letters = [r for p in range(PARTITIONS) for r in kit.journal.log(kit.topic("deadletter"), p)]
    assert [(r.key(), r.value()) for r in letters] == [(bad.key(), bad.value())]
    assert dict(letters[0].headers() or [])["source_offset"] == str(bad.offset()).encode()
    kit.assert_exact()  # positions past the bad record, which has no rows


def test_a_batch_does_not_commit_before_its_dead_letters_are_acknowledged(kit: Kit) -> None:
    kit.write(20)
    kit.journal.produce(kit.topic("events"), b"garbage", b"user:x", 0)
    projector = kit.projector()
    sink = projector.deadletters
    assert isinstance(sink, InMemoryDeadLetterSink)
    sink.fail_next_send("the broker is gone")
    with pytest.raises(InfrastructureError, match="the broker is gone"):
        projector.run()
    assert kit.db.positions() == {} or set(kit.db.positions().values()) == {0}
    assert kit.audit_offsets() == {p: [] for p in range(PARTITIONS)}


def test_a_zombie_batch_conflicts_and_resyncs_without_writing_twice(kit: Kit) -> None:
    """A projector whose partitions another one projected meanwhile (it was presumed
    dead) fails its batch on the positions' compare-and-set, reads the stored positions
    and goes on from there."""
    kit.write(300)
    zombie_store = Store(kit.db)

    def successor_runs_first(_batch: Batch) -> None:
        zombie_store.before_batch = None
        kit.projector().run()  # the new owner projects everything

    zombie_store.before_batch = successor_runs_first
    zombie = kit.projector(zombie_store, batch_records=60)
    stats = zombie.run()
    assert stats.conflicts == 1  # one conflict, then it resumed at the stored positions
    assert stats.batches == 0
    kit.assert_exact()


def mid_batch(kit: Kit, source: InMemoryJournalSource) -> tuple[PositionKey, int]:
    """The last events partition, and a count of records consumed at which the projector
    has read part of it: accounts and the other partitions come first, 10 at a time."""
    last = (kit.topic("events"), PARTITIONS - 1)
    before = sum(len(kit.journal.log(*k)) for k in kit.ends() if k != last)
    return last, before + 5


def small_consumes(kit: Kit) -> None:
    tuning = replace(kit.settings.tuning, project_consume_max=10)
    kit.settings = replace(kit.settings, tuning=tuning)


def test_revocation_mid_batch_commits_what_was_read_and_then_lets_go(kit: Kit) -> None:
    small_consumes(kit)
    kit.write(200)
    store = Store(kit.db, shared=True)
    projector = kit.projector(store, batch_ms=10_000)
    source = projector.source
    assert isinstance(source, InMemoryJournalSource)
    last, after = mid_batch(kit, source)
    source.group_revokes([last], after=after)
    stats = projector.run()
    kind, read = source.delivered[-1]
    assert kind == "revoke" and 0 < read[last] < len(kit.journal.log(*last))
    assert kit.db.positions()[last] == read[last]  # the batch committed at revocation
    assert set(kit.audit_offsets()[last[1]]) == set(range(read[last]))
    assert stats.batches == 1 and len(store.batches) == 1


def test_a_lost_partition_s_pending_rows_are_never_written(kit: Kit) -> None:
    small_consumes(kit)
    kit.write(200)
    projector = kit.projector(Store(kit.db, shared=True), batch_ms=10_000)
    source = projector.source
    assert isinstance(source, InMemoryJournalSource)
    _last, after = mid_batch(kit, source)
    source.group_loses(list(kit.ends()), after=after)  # the session expired: all of them
    runner = threading.Thread(target=projector.run)
    runner.start()
    deadline = time.monotonic() + 10
    while not any(kind == "lose" for kind, _ in source.delivered):
        assert time.monotonic() < deadline, "the loss was never delivered"
        time.sleep(0.01)
    projector.stop()
    runner.join(10)
    assert source.handed_out >= after and projector.stats.batches == 0  # read, not written
    assert set(kit.db.positions().values()) == {0}
    assert kit.audit_offsets() == {p: [] for p in range(PARTITIONS)}


def test_a_log_that_lost_records_past_the_stored_position_is_refused(kit: Kit) -> None:
    kit.write(50)
    kit.journal.delete_before(kit.topic("events"), 1, 5)
    with pytest.raises(StoreError, match=r"stored position 0 of unit\.events\[1\] is below "
                                         r"its log start offset 5: records 0\.\.4 were deleted"):
        kit.projector().run()
    assert kit.audit_offsets() == {p: [] for p in range(PARTITIONS)}
