"""What the log holds, read for the history checker apart from the processor: journal
events and balance snapshots, decoded by faults.fold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faults import fold
from ledger.settings import Settings


@dataclass(frozen=True, slots=True)
class JournalEvent:
    """One committed journal record, as the checker needs it."""

    key: str  # the record's Kafka key: the deciding account
    command_id: str
    event_id: str
    kind: str
    postings: tuple[tuple[str, int], ...]
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One committed record of the balances changelog."""

    account: str
    balance: int
    floor: int
    partition: int = -1
    offset: int = -1


def journal_event_of(key: str, event: dict[str, Any], partition: int = -1,
                     offset: int = -1) -> JournalEvent:
    """From a decoded event record (the Avro dict of schemas/event.v1.avsc)."""
    return JournalEvent(key, event["command_id"], event["event_id"], str(event["kind"]),
                        tuple((p["account"], int(p["amount"])) for p in event["postings"]),
                        partition, offset)


def snapshot_of(rec: dict[str, Any], partition: int = -1, offset: int = -1) -> Snapshot:
    """From a decoded balance record (schemas/balance.v1.avsc)."""
    return Snapshot(rec["account"], int(rec["balance"]), int(rec["floor"]), partition, offset)


def read_journal_events(settings: Settings) -> list[JournalEvent]:
    """Every committed journal record of the settings' topics (independent decoder)."""
    return [journal_event_of(key, rec, partition, offset)
            for partition, offset, key, rec in fold.read_records(
                settings.bootstrap, settings.topic("events"), fold.SCHEMA,
                dict(settings.kafka_extra))]


def read_snapshots(settings: Settings) -> list[Snapshot]:
    """Every committed record of the balances changelog, in log order per partition
    (compaction may have dropped superseded ones; the latest per account is always kept)."""
    return [snapshot_of(rec, partition, offset)
            for partition, offset, _, rec in fold.read_records(
                settings.bootstrap, settings.topic("balances"), fold.BALANCE_SCHEMA,
                dict(settings.kafka_extra))]


