"""The ledger's topics, their configs, creation and the startup guard."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from ledger.errors import InfrastructureError, MissingTopicsError, TopicConfigError
from ledger.kafka import check_reachable, unreachable
from ledger.settings import Settings

DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str  # without the prefix
    configs: dict[str, str]
    purpose: str


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "commands",
        {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
        "point commands, keyed by the deciding account",
    ),
    TopicSpec(
        "events",
        {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"},
        "the journal: the source of truth, never expires",
    ),
    TopicSpec("accounts", {"cleanup.policy": "compact"}, "account states, keyed by account"),
    TopicSpec(
        "balances",
        {"cleanup.policy": "compact"},
        "the processor's balance changelog, keyed by account",
    ),
    TopicSpec(
        "guards",
        {"cleanup.policy": "compact"},
        "the processor's permanent guards (reversed events, applied credits), by partition",
    ),
    TopicSpec(
        "results",
        {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)},
        "outcomes of commands, keyed by the deciding account",
    ),
    TopicSpec(
        "deadletter",
        {"cleanup.policy": "delete", "retention.ms": str(30 * DAY_MS)},
        "undecodable records with headers naming their origin",
    ),
)
JOURNAL = "events"


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


def replication_for(admin: AdminClient, settings: Settings) -> tuple[int, int]:
    """(replication factor, min.insync.replicas): 3 and 2 on a cluster, 1 and 1 alone."""
    brokers = len(admin.list_topics(timeout=settings.tuning.kafka_request_s).brokers)
    rf = settings.replication_factor or (3 if brokers >= 3 else 1)
    return rf, (2 if rf >= 3 else 1)


def create_topics(settings: Settings) -> list[str]:
    """Create every missing topic; returns the names created. Idempotent."""
    admin = check_reachable(settings)
    rf, min_isr = replication_for(admin, settings)
    existing = set(admin.list_topics(timeout=settings.tuning.kafka_request_s).topics)
    new = [
        NewTopic(
            settings.topic(t.name),
            num_partitions=settings.partitions,
            replication_factor=rf,
            config={
                **t.configs,
                "min.insync.replicas": str(min_isr),
                "unclean.leader.election.enable": "false",
            },
        )
        for t in TOPICS
        if settings.topic(t.name) not in existing
    ]
    for name, fut in admin.create_topics(new, operation_timeout=30).items() if new else []:
        try:
            fut.result()
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise InfrastructureError(f"cannot create topic {name}: {e}") from e
    _wait_for_leaders(admin, [t.topic for t in new])
    _guard_created(settings, admin)
    return [t.topic for t in new]


def _guard_created(settings: Settings, admin: AdminClient, timeout: float = 30.0) -> None:
    """guard_topics, patient with topics just created: on a cluster, the broker that
    answers a metadata request may not have learnt of them yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            guard_topics(settings, admin)
            return
        except MissingTopicsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float = 30.0) -> None:
    """New topics are usable once every partition has a leader; clients fail before that."""
    deadline = time.monotonic() + timeout
    while names:
        topics = admin.list_topics(timeout=10).topics
        names = [
            n
            for n in names
            if n not in topics
            or topics[n].error is not None
            or any(p.leader < 0 for p in topics[n].partitions.values())
        ]
        if names and time.monotonic() > deadline:
            raise InfrastructureError(
                f"topics without partition leaders after {timeout:g}s: {', '.join(names)}"
            )
        if names:
            time.sleep(0.1)


def describe_topics(settings: Settings, admin: AdminClient | None = None) -> list[TopicState]:
    admin = admin or check_reachable(settings)
    meta = admin.list_topics(timeout=settings.tuning.kafka_request_s).topics
    names = [settings.topic(t.name) for t in TOPICS if settings.topic(t.name) in meta]
    if not names:
        return []
    futures = admin.describe_configs([ConfigResource("topic", n) for n in names])
    states = []
    for resource, fut in futures.items():
        try:
            entries = fut.result()
        except KafkaException as e:
            raise unreachable(settings, e) from e
        parts = meta[resource.name].partitions
        rf = len(next(iter(parts.values())).replicas) if parts else 0
        configs = {k: str(v.value) for k, v in entries.items()}
        states.append(TopicState(resource.name, len(parts), rf, configs))
    return sorted(states, key=lambda s: s.name)


def guard_topics(settings: Settings, admin: AdminClient | None = None) -> None:
    """Refuse to run against topics that would lose journal data or break co-partitioning."""
    states = {s.name: s for s in describe_topics(settings, admin)}
    missing = [settings.topic(t.name) for t in TOPICS if settings.topic(t.name) not in states]
    if missing:
        raise MissingTopicsError(
            f"missing topics {', '.join(missing)}: run `ledger topics create` first"
        )
    journal = states[settings.topic(JOURNAL)]
    problems = []
    if "compact" in journal.configs.get("cleanup.policy", ""):
        problems.append("cleanup.policy is compact")
    for key in ("retention.ms", "retention.bytes"):
        if journal.configs.get(key) != "-1":
            problems.append(f"{key} is {journal.configs.get(key)} (must be -1)")
    if problems:
        raise TopicConfigError(
            f"journal topic {journal.name} would lose events: {'; '.join(problems)}. "
            "Fix it with kafka-configs or recreate it; the ledger refuses to run on it."
        )
    counts = {s.name: s.partitions for s in states.values()}
    if len(set(counts.values())) > 1:
        raise TopicConfigError(f"topics are not co-partitioned (partition counts: {counts})")


def guard_dedup_window(settings: Settings, admin: AdminClient | None = None) -> None:
    """Refuse a deduplication window longer than points.results keeps outcomes.

    A processor that loses its local state restores the window's outcomes from that
    topic: what it no longer holds could be applied a second time.
    """
    results = settings.topic("results")
    state = next((s for s in describe_topics(settings, admin) if s.name == results), None)
    if state is None:
        return  # guard_topics names missing topics
    retention = int(state.configs.get("retention.ms", "-1"))
    if 0 <= retention < settings.dedup_window_s * 1000:
        raise TopicConfigError(
            f"{results} keeps outcomes {retention / 1000:g} s but LEDGER_DEDUP_WINDOW is "
            f"{settings.dedup_window_s:g} s: raise its retention.ms or shorten the window"
        )
