"""ledger.kafka.retrying: Kafka's "not yet" answers are waited out, others are not."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException

from ledger.kafka import retrying


def failing(codes: list[int]) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= len(codes):
            raise KafkaException(KafkaError(codes[len(calls) - 1]))
        return "answer"

    return calls, call


@pytest.mark.parametrize("code", [KafkaError.NOT_COORDINATOR,
                                  KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                  KafkaError.NOT_LEADER_FOR_PARTITION])
def test_not_yet_is_retried_until_it_answers(code: int) -> None:
    calls, call = failing([code, code])
    assert retrying(call, timeout=5) == "answer"
    assert len(calls) == 3


def test_other_errors_are_raised_at_once() -> None:
    calls, call = failing([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException):
        retrying(call, timeout=5)
    assert len(calls) == 1


def test_not_yet_past_the_timeout_is_raised() -> None:
    calls, call = failing([KafkaError.NOT_COORDINATOR] * 100)
    with pytest.raises(KafkaException):
        retrying(call, timeout=0.25)
    assert 2 <= len(calls) < 100
