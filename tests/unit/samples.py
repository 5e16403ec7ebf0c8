"""One valid record of every schema, for round trips."""

from __future__ import annotations

from typing import Any

SAMPLES: dict[str, dict[str, Any]] = {
    "guard": {
        "kind": "CREDITS_APPLIED",
        "event_id": None,
        "command_id": None,
        "source_partition": 2,
        "source_offset": 41,
        "accounts": ["room:math"],
        "recorded_at": 1_700_000_000_000,
    },
    "command": {
        "command_id": "c-1",
        "kind": "JOIN",
        "account": "user:alice",
        "counterparty": "room:math",
        "amount": 30,
        "floor": 0,
        "ref_event_id": None,
        "ref_partition": None,
        "ref_offset": None,
        "actor": "USER",
        "reason": "join math",
        "issued_at": 1_700_000_000_000,
    },
    "event": {
        "event_id": "6f1c2d9e-8a57-5b0e-9d55-0d1f6e9c1a11",
        "command_id": "c-1",
        "kind": "JOINED",
        "postings": [
            {"account": "user:alice", "amount": -30},
            {"account": "room:math", "amount": 30},
        ],
        "occurred_at": 1_700_000_000_123,
        "actor": "USER",
        "reason": "join math",
        "reverses_event_id": None,
    },
    "account": {
        "account": "room:math",
        "type": "ROOM",
        "floor": 0,
        "status": "OPEN",
        "opened_at": 1_700_000_000_000,
        "command_id": "c-0",
    },
    "balance": {
        "account": "user:alice",
        "balance": 70,
        "floor": 0,
        "is_open": True,
        "type": "USER",
        "updated_at": 1_700_000_000_123,
        "last_event_id": "6f1c2d9e-8a57-5b0e-9d55-0d1f6e9c1a11",
    },
    "result": {
        "command_id": "c-1",
        "status": "REJECTED",
        "reason": "insufficient_points",
        "detail": "balance 10 - 30 < floor 0",
        "event_ids": [],
        "account": "user:alice",
        "payload_fingerprint": "ab12",
        "reverses_event_id": None,
        "decided_at": 1_700_000_000_124,
    },
}
