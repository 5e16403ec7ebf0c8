"""The restore of a partition's state from its changelogs: never a checkpoint past what was read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.domain import DedupWindow
from ledger.errors import InfrastructureError
from ledger.processor.ports import CHANGELOGS
from ledger.processor.restore import Restorer
from ledger.processor.store import StateStore
from ledger.wire import Codec


class ShortReader:
    """A changelog reader that stops before the end it was asked for, as the Kafka reader
    did when a new leader's lagging high watermark ended the partition early."""

    def __init__(self, end: int, stops_at: int) -> None:
        self.end, self.stops_at = end, stops_at
        self.reads: list[tuple[int, int]] = []

    def stable_ends(self, partition: int) -> dict[str, tuple[int, int]]:
        return {n: (0, self.end if n == "balances" else 0) for n in CHANGELOGS}

    def ends(self, partitions: list[int]) -> dict[int, dict[str, int]]:
        return {p: {n: e for n, (_, e) in self.stable_ends(p).items()} for p in partitions}

    def read(self, changelog: str, partition: int, start: int,
             end: int) -> Iterator[tuple[list[bytes | None], int]]:
        self.reads.append((start, end))
        stop = min(self.stops_at, end)
        yield [None] * (stop - start), stop  # tombstones: nothing to apply

    def close(self) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = StateStore(tmp_path / "state.sqlite")
    opened.open()
    yield opened
    opened.close()


def test_a_short_read_fails_and_keeps_the_checkpoint_where_the_read_stopped(
        store: StateStore) -> None:
    restorer = Restorer(ShortReader(end=10, stops_at=4), Codec(), DedupWindow())
    with pytest.raises(InfrastructureError, match="offset 4 of 10"):
        restorer.restore(store, 0)
    assert store.checkpoints(0).get("balances", 0) <= 4


def test_a_full_read_checkpoints_the_end(store: StateStore) -> None:
    Restorer(ShortReader(end=10, stops_at=10), Codec(), DedupWindow()).restore(store, 0)
    assert store.checkpoints(0)["balances"] == 10


class LaggingEnds(ShortReader):
    """Ends that read low for a while (a new leader's high watermark catching up), then
    true: what a coordinator-kill run saw before it wiped a partition's state."""

    def __init__(self, end: int, stale_answers: int, stale: int) -> None:
        super().__init__(end, stops_at=end)
        self.stale_answers, self.stale = stale_answers, stale

    def stable_ends(self, partition: int) -> dict[str, tuple[int, int]]:
        if self.stale_answers > 0:
            self.stale_answers -= 1
            return {n: (0, self.stale) for n in CHANGELOGS}
        return super().stable_ends(partition)


def test_ends_that_lag_for_a_moment_do_not_wipe_the_state(store: StateStore) -> None:
    Restorer(ShortReader(end=10, stops_at=10), Codec(), DedupWindow()).restore(store, 0)
    lagging = LaggingEnds(end=12, stale_answers=2, stale=3)
    Restorer(lagging, Codec(), DedupWindow(), recheck_s=0.01).restore(store, 0)
    assert store.checkpoints(0)["balances"] == 12  # read on from 10: nothing forgotten
    assert lagging.reads == [(10, 12)]


def test_changelogs_really_recreated_are_restored_anew(store: StateStore) -> None:
    Restorer(ShortReader(end=10, stops_at=10), Codec(), DedupWindow()).restore(store, 0)
    recreated = LaggingEnds(end=4, stale_answers=0, stale=0)
    Restorer(recreated, Codec(), DedupWindow(), recheck_s=0.01).restore(store, 0)
    assert store.checkpoints(0)["balances"] == 4
    assert recreated.reads == [(0, 4)]
