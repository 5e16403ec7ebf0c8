"""Topics against the real broker: configs read back, idempotence, the journal guard."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

from ledger.errors import TopicConfigError
from ledger.kafka import make_admin
from ledger.settings import Settings
from ledger.topics import TOPICS, create_topics, describe_topics, guard_topics

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:alter_configs has been deprecated"),
]


def test_configs_read_back_with_the_admin_client(settings: Settings) -> None:
    admin = make_admin(settings)
    names = [settings.topic(t.name) for t in TOPICS]
    futures = admin.describe_configs([ConfigResource("topic", n) for n in names])
    configs = {r.name: {k: v.value for k, v in f.result().items()} for r, f in futures.items()}
    journal = configs[settings.topic("events")]
    assert journal["cleanup.policy"] == "delete"
    assert journal["retention.ms"] == "-1"
    assert journal["retention.bytes"] == "-1"
    assert configs[settings.topic("accounts")]["cleanup.policy"] == "compact"
    assert configs[settings.topic("balances")]["cleanup.policy"] == "compact"
    assert configs[settings.topic("commands")]["retention.ms"] == str(7 * 86_400_000)
    assert configs[settings.topic("deadletter")]["retention.ms"] == str(30 * 86_400_000)
    meta = admin.list_topics(timeout=10).topics
    assert {len(meta[n].partitions) for n in names} == {settings.partitions}


def test_create_is_idempotent(settings: Settings) -> None:
    assert create_topics(settings) == []
    assert len(describe_topics(settings)) == len(TOPICS)


def test_guard_refuses_a_journal_with_finite_retention(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    admin = make_admin(settings)
    resource = ConfigResource(
        "topic",
        settings.topic("events"),
        set_config={
            "retention.ms": "86400000",
            "retention.bytes": "-1",
            "cleanup.policy": "delete",
        },
    )
    for fut in admin.alter_configs([resource]).values():
        fut.result()
    with pytest.raises(TopicConfigError, match=r"retention\.ms is 86400000"):
        guard_topics(settings)


def test_guard_refuses_a_compacted_journal(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    resource = ConfigResource(
        "topic",
        settings.topic("events"),
        set_config={"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"},
    )
    admin = make_admin(settings)  # keep the handle alive until the futures resolve
    for fut in admin.alter_configs([resource]).values():
        fut.result()
    # The broker applies an altered config from the metadata log a moment later; under
    # load a describe right away can still show the old one.
    deadline = time.monotonic() + 15
    while True:
        try:
            guard_topics(settings)
        except TopicConfigError as e:
            assert "compact" in str(e)
            return
        assert time.monotonic() < deadline, "the guard never saw the compacted journal"
        time.sleep(0.2)


def test_guard_names_missing_topics(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(TopicConfigError, match="ledger topics create"):
        guard_topics(make_settings(create=False))
