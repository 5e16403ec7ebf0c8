"""The processor's state store (SQLite) and the batch overlay on top of it, without Kafka."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ledger.domain import AccountState, AccountType
from ledger.errors import UsageError
from ledger.processor.state import BatchChanges, CreditMark, Overlay
from ledger.processor.store import StateStore
from ledger.records import Outcome

MakeOutcome = Callable[..., Outcome]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = StateStore(tmp_path / "state" / "p0.sqlite")
    opened.open()
    yield opened
    opened.close()


@pytest.fixture
def make_outcome() -> MakeOutcome:
    def make(command_id: str, accepted: bool = True, account: str = "user:a",
             reverses: str | None = None) -> Outcome:
        return Outcome(command_id, accepted, None if accepted else "insufficient_points",
                       "" if accepted else "short", (f"ev-{command_id}",) if accepted else (),
                       account, f"fp-{command_id}", reverses)
    return make


def commit(store: StateStore, partition: int, *outcomes: Outcome, forget_at: int = 10**13,
           balances: tuple[AccountState, ...] = ()) -> None:
    changes = BatchChanges()
    for o in outcomes:
        changes.outcomes[(partition, o.command_id)] = (o, 0)
    for s in balances:
        changes.balances[s.account] = (partition, s)
    store.commit(changes, {key: forget_at for key in changes.outcomes})


def test_batched_lookup_finds_what_single_lookups_find(
    store: StateStore, make_outcome: MakeOutcome
) -> None:
    known = [make_outcome(f"c{i}", accepted=i % 3 != 0) for i in range(1200)]
    commit(store, 1, *known)
    commit(store, 2, make_outcome("only-on-2"))
    asked = [f"c{i}" for i in range(0, 2400, 2)] + ["only-on-2", "c4"]  # a duplicate id too
    found = store.outcomes(1, asked)
    assert found == {i: o for i in asked if (o := store.outcome(1, i)) is not None}
    assert len(found) == 600 and "only-on-2" not in found
    assert found["c6"].accepted is False and found["c2"].event_ids == ("ev-c2",)


def test_first_outcome_stands_and_pruning_forgets_only_the_expired(
    store: StateStore, make_outcome: MakeOutcome
) -> None:
    commit(store, 0, make_outcome("a"), forget_at=100)
    commit(store, 0, make_outcome("a", accepted=False), make_outcome("b"), forget_at=500)
    assert store.outcome(0, "a") == make_outcome("a")  # the retry's echo never replaces it
    assert store.prune(now_ms=200) == 1
    assert store.outcomes(0, ["a", "b"]) == {"b": make_outcome("b")}


def test_balances_checkpoints_and_reset_are_per_partition(store: StateStore) -> None:
    alice = AccountState("user:alice", AccountType.USER, 0, 40, True)
    commit(store, 3, balances=(alice,))
    store.checkpoint(3, {"points.balances": 17})
    store.forget_cache()
    assert store.balance(3, "user:alice") == alice
    assert store.balance(4, "user:alice") is None  # another partition's owner decides it
    assert store.checkpoints(3) == {"points.balances": 17}
    store.reset(3)
    assert store.balance(3, "user:alice") is None and store.checkpoints(3) == {}


def test_a_second_process_on_the_same_file_is_refused(store: StateStore) -> None:
    with pytest.raises(UsageError, match="in use by another process"):
        StateStore(store.path).open()


def test_overlay_preload_serves_committed_outcomes_under_the_batch_changes(
    store: StateStore, make_outcome: MakeOutcome
) -> None:
    commit(store, 0, make_outcome("old"))
    overlay = Overlay(store, owns=lambda p: True, known=lambda a: True, route=lambda a: 0)
    overlay.preload({0: ["old", "new"]})
    overlay.bind(0)
    assert overlay.outcome("old") == make_outcome("old")
    assert overlay.outcome("new") is None
    overlay.record(make_outcome("new"), decided_ms=1)
    assert overlay.outcome("new") == make_outcome("new")  # the batch's own decision first
    commit(store, 0, *(o for o, _ in overlay.reset().outcomes.values()))
    assert overlay.outcome("new") == make_outcome("new")  # read again after the commit


def test_overlay_credit_marks_and_reversals_span_batch_and_store(
    store: StateStore, make_outcome: MakeOutcome
) -> None:
    overlay = Overlay(store, owns=lambda p: True, known=lambda a: True, route=lambda a: 0)
    overlay.bind(2)
    overlay.mark_credit(source=5, offset=10, account="room:r1")
    overlay.record(make_outcome("rev", reverses="ev-x"), decided_ms=1)
    changes = overlay.reset()
    assert changes.marks == {(2, 5): CreditMark(10, frozenset({"room:r1"}))}
    store.commit(changes, {key: 10**13 for key in changes.outcomes})
    overlay.bind(2)
    assert overlay.credit_applied(5, 9, "room:any") and overlay.credit_applied(5, 10, "room:r1")
    assert not overlay.credit_applied(5, 10, "room:r2") and not overlay.credit_applied(5, 11, "x")
    assert "ev-x" in overlay.reversed_ids and "ev-y" not in overlay.reversed_ids
