"""One store, one journal: which journal a store projects, and refusing any other.

A store records the topic prefix and the Kafka cluster id of the journal it
projects (projection_meta), written by the first projector or replay. A projector
or replay of another journal is refused (JournalMismatchError, exit 2) unless it
is told to reset the store. A store made before identities were recorded names its
journal by the topics of its positions (the cluster then unknown).
"""

from __future__ import annotations

from typing import Any, Protocol

from confluent_kafka import KafkaException

from ledger.errors import JournalMismatchError
from ledger.kafka import unreachable
from ledger.settings import Settings
from projections.store import JournalIdentity, ProjectionStore


class _KafkaClient(Protocol):  # a Consumer or an AdminClient
    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any: ...


def journal_of(settings: Settings, client: _KafkaClient) -> JournalIdentity:
    """The journal these settings name: their topic prefix on the cluster client talks to."""
    try:  # one topic's metadata: a cluster's full list can be long, and carries no more
        meta = client.list_topics(settings.topic("events"),
                                 timeout=settings.tuning.kafka_request_s)
    except KafkaException as e:
        raise unreachable(settings, e) from e
    return JournalIdentity(settings.topic_prefix, meta.cluster_id or "")


def held_journal(store: ProjectionStore) -> JournalIdentity | None:
    """The journal the store projects: recorded, or named by its positions' topics."""
    recorded = store.journal()
    if recorded is not None:
        return recorded
    prefixes = sorted({topic.rsplit(".", 1)[0] for topic, _ in store.positions()})
    return JournalIdentity(" and ".join(prefixes), "") if prefixes else None


def check_journal(store: ProjectionStore, wanted: JournalIdentity) -> None:
    """Refuse a store that projects another journal (a store projecting none is fine)."""
    held = held_journal(store)
    if held is not None and not held.matches(wanted):
        raise mismatch(store, held, wanted)


def claim_journal(store: ProjectionStore, wanted: JournalIdentity) -> None:
    """check_journal, then record wanted unless the store records it already (two
    projectors of two journals starting at once: one of them is refused here)."""
    check_journal(store, wanted)
    held = store.claim_journal(wanted)
    if not held.matches(wanted):
        raise mismatch(store, held, wanted)


def mismatch(store: ProjectionStore, held: JournalIdentity,
             wanted: JournalIdentity) -> JournalMismatchError:
    return JournalMismatchError(
        f"store {store.url} projects the journal with {held}, not the one with {wanted}; "
        "--reset wipes the store and projects this journal from offset zero")
