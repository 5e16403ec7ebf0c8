"""Bounds on a command's id, reason and id-like fields (what keeps derived records small)."""

from __future__ import annotations

import pytest

from ledger.domain import MAX_COMMAND_ID_CHARS, MAX_REASON_CHARS, envelope_problem
from ledger.records import record_problem


@pytest.mark.parametrize(
    ("command_id", "reason", "problem"),
    [
        ("c1", "", None),
        ("c" * MAX_COMMAND_ID_CHARS, "r" * MAX_REASON_CHARS, None),
        ("", "", "command id of 0 characters"),
        ("c" * (MAX_COMMAND_ID_CHARS + 1), "", "command id of 257 characters"),
        ("c1", "r" * (MAX_REASON_CHARS + 1), "reason of 4097 characters"),
    ],
)
def test_envelope_problem(command_id: str, reason: str, problem: str | None) -> None:
    found = envelope_problem(command_id, reason)
    assert (found is None) if problem is None else (found or "").startswith(problem)


def _rec(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"command_id": "c1", "account": "user:a", "counterparty": None,
                               "ref_event_id": None}
    return {**base, **fields}


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, None),
        ({"account": "not even an account"}, None),  # decided: rejected as invalid_account
        ({"command_id": ""}, "command_id of 0"),
        ({"command_id": "x" * 300}, "command_id of 300"),
        ({"account": "u" * 257}, "account of 257"),
        ({"counterparty": "r" * 1000}, "counterparty of 1000"),
        ({"ref_event_id": "e" * 500}, "ref_event_id of 500"),
    ],
)
def test_record_problem(fields: dict[str, object], problem: str | None) -> None:
    found = record_problem(_rec(**fields))
    assert (found is None) if problem is None else (found or "").startswith(problem)
