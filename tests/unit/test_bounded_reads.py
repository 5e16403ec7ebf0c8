"""Bounded reads end when each partition's position reached the end measured before
reading: not at an end-of-partition event, not at the last offset seen (transaction
markers take offsets), and never by waiting for ever."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from confluent_kafka import Message, TopicPartition

from ledger.errors import InfrastructureError
from ledger.journal import read_between
from ledger.kafka import reached_ends
from ledger.settings import Settings

TOPIC = "t.events"
QUICK = Settings(topic_prefix="t")
QUICK = replace(QUICK, tuning=replace(QUICK.tuning, read_poll_s=0.0, read_stall_s=0.3))


class ScriptedConsumer:
    """Each consume() hands out the next batch and moves positions as the script says."""

    def __init__(self, script: list[tuple[list[int], dict[int, int]]]) -> None:
        self.script = list(script)
        self.at: dict[int, int] = {}
        self.assigned: list[TopicPartition] = []

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = tps

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        if not self.script:
            return []
        offsets, moved = self.script.pop(0)
        self.at.update(moved)
        return [Message(topic=TOPIC, partition=0, offset=o, value=b"v") for o in offsets]

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.at.get(tp.partition, -1001))
                for tp in tps]


def read(consumer: Any, ends: dict[int, int]) -> list[int]:
    return [m.offset() for m in read_between(QUICK, consumer, TOPIC, {0: 0}, ends)]


def test_a_read_ends_past_a_trailing_transaction_marker() -> None:
    consumer = ScriptedConsumer([([0, 1], {0: 3})])  # offset 2 is the commit marker
    assert read(consumer, {0: 3}) == [0, 1]


def test_a_read_goes_on_past_an_early_quiet_spell_to_its_end() -> None:
    """A new leader answers nothing for a while, then the rest arrives."""
    consumer = ScriptedConsumer([([], {}), ([0], {0: 1}), ([], {0: 1}), ([1, 2], {0: 3})])
    assert read(consumer, {0: 3}) == [0, 1, 2]


def test_a_read_that_makes_no_progress_fails_instead_of_waiting_for_ever() -> None:
    consumer = ScriptedConsumer([([0], {0: 1})])
    with pytest.raises(InfrastructureError, match=r"1 partitions of t\.events remain"):
        read(consumer, {0: 5})


def test_a_partition_with_no_position_yet_stands_at_its_start() -> None:
    consumer: Any = ScriptedConsumer([])
    assert reached_ends(consumer, {(TOPIC, 0): 0, (TOPIC, 1): 4},
                        {(TOPIC, 0): 0, (TOPIC, 1): 2}) == {(TOPIC, 0): 0}
