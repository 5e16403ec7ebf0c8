"""Wire records to domain objects and back: what is persisted must stay stable."""

from __future__ import annotations

from ledger.records import command_from_record
from tests.unit.samples import SAMPLES


def test_payload_fingerprints_are_stable() -> None:
    # Results on the log carry these digests; a restored outcome is compared by them, so a
    # change of how they are computed would turn every retry after an upgrade into a conflict.
    join = SAMPLES["command"]
    assert command_from_record(join).fingerprint == "46e577e2dfe4c9e8f3ebbf5a08b4d43b"
    reverse = {**join, "kind": "REVERSE", "ref_event_id": "e-9", "ref_partition": 2,
               "ref_offset": 41, "counterparty": None}
    assert command_from_record(reverse).fingerprint == "44505cbb7459b08ec7a814c12ee13a68"


def test_the_fingerprint_ignores_id_and_time() -> None:
    join = SAMPLES["command"]
    other = {**join, "command_id": "c-2", "issued_at": join["issued_at"] + 1}
    assert command_from_record(other).fingerprint == command_from_record(join).fingerprint
    assert command_from_record({**join, "amount": 31}).fingerprint != command_from_record(
        join).fingerprint
