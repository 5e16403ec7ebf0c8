"""A partition's state restored from its changelogs' tails, after the last owner's commit is stable.

A new owner first fetches the group's stable committed offsets (KIP-447: a pending
transactional offset commit is waited for; see group.py), then asks the changelog reader
for each changelog's stable end (no transaction open any more: the previous owner's
writes are all in), and only then reads each changelog from the store's checkpoint to
that end.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from ledger.domain import DedupWindow
from ledger.errors import CodecError, InfrastructureError
from ledger.processor.ports import CHANGELOGS, ChangelogReader
from ledger.processor.state import CreditMark
from ledger.processor.store import StateStore
from ledger.records import Outcome, snapshot_from_record
from ledger.wire import Codec

log = logging.getLogger("ledger.processor")


RECHECKS = 10  # times the ends are asked again while the store is ahead of them
RECHECK_S = 1.0  # between those: a new leader's high watermark catches up in well under 10 s


def _ahead(checkpoints: dict[str, int], ends: dict[str, tuple[int, int]]) -> bool:
    return any(checkpoints.get(n, 0) > ends[n][1] for n in CHANGELOGS)


@dataclass
class Restored:
    records: int = 0
    millis: float = 0.0


class Restorer:
    """Reads changelog tails into the store."""

    def __init__(self, reader: ChangelogReader, codec: Codec, window: DedupWindow,
                 recheck_s: float = RECHECK_S) -> None:
        self.reader, self.codec, self.window = reader, codec, window
        self.recheck_s = recheck_s

    def restore(self, store: StateStore, partition: int) -> Restored:
        """Bring the store's state of `partition` up to its changelogs' stable ends."""
        started, done = time.monotonic(), Restored()
        store.forget_cache(partition)
        checkpoints = store.checkpoints(partition)
        ends = self._ends(partition, checkpoints)
        if _ahead(checkpoints, ends):
            # Still ahead after the rechecks: the topics were recreated under the same names.
            log.warning("partition %d: state ahead of its changelogs; restoring anew", partition)
            store.reset(partition)
            checkpoints = {}
        for name, (low, end) in ends.items():
            start = max(checkpoints.get(name, 0), low)
            if start < end:
                done.records += self._read_into(store, name, partition, start, end)
        done.millis = (time.monotonic() - started) * 1000
        log.info("partition %d restored: %d changelog records read in %.0f ms",
                 partition, done.records, done.millis)
        return done

    def _ends(self, partition: int, checkpoints: dict[str, int]) -> dict[str, tuple[int, int]]:
        """The stable ends; asked again for a while if the store is ahead of them. Right
        after a leader moves, the new leader's high watermark can lag the old one's: that
        is not a recreated topic, and a reset then would forget the partition's state."""
        ends = self.reader.stable_ends(partition)
        for _ in range(RECHECKS):
            if not _ahead(checkpoints, ends):
                break
            log.info("partition %d: changelog ends %s below the state's checkpoints %s; "
                     "asking again", partition, {n: e for n, (_, e) in ends.items()},
                     checkpoints)
            time.sleep(self.recheck_s)
            ends = self.reader.stable_ends(partition)
        return ends

    def _read_into(self, store: StateStore, name: str, partition: int, start: int,
                   end: int) -> int:
        read, reached = 0, start
        for values, next_offset in self.reader.read(name, partition, start, end):
            self._apply(store, name, partition, values, next_offset)
            read, reached = read + len(values), next_offset
        if reached < end:
            # A checkpoint at `end` would skip the unread records for good.
            raise InfrastructureError(f"{name}[{partition}]: the changelog read stopped at "
                                      f"offset {reached} of {end}")
        store.checkpoint(partition, {name: end})
        return read

    def _apply(self, store: StateStore, name: str, partition: int,
               values: list[bytes | None], next_offset: int) -> None:
        records = [r for r in (self._decode(name, v) for v in values) if r]
        if name == "balances":
            store.restore(partition, name, next_offset,
                          balances=[snapshot_from_record(r) for r in records])
        elif name == "results":
            store.restore(partition, name, next_offset, outcomes=self._outcomes(records))
        else:
            reversed_ids = [(r["event_id"], r["command_id"] or "") for r in records
                            if r["kind"] == "EVENT_REVERSED"]
            marks = [(r["source_partition"], CreditMark(r["source_offset"],
                                                         frozenset(r["accounts"])))
                     for r in records if r["kind"] == "CREDITS_APPLIED"]
            store.restore(partition, name, next_offset, reversed_ids=reversed_ids, marks=marks)

    def _outcomes(self, records: list[dict[str, Any]]) -> list[tuple[Outcome, int]]:
        now = int(time.time() * 1000)
        out = []
        for rec in records:
            if rec["status"] == "REJECTED" and not rec["payload_fingerprint"]:
                continue  # a refusal (misrouted, expired, unreadable), not a decision
            forget_at = self.window.forget_after(rec["decided_at"])
            if forget_at >= now:
                out.append((Outcome.from_record(rec), forget_at))
        return out

    def _decode(self, name: str, value: bytes | None) -> dict[str, Any]:
        if value is None:
            return {}
        try:
            return self.codec.decode_as(CHANGELOGS[name], value)
        except CodecError as e:
            # The processor wrote these itself; a bad one is a bug to see, not a reason to stop.
            log.error("undecodable %s record in a changelog: %s", name, e)
            return {}
