"""--as-of parsing: ISO-8601 in any zone or epoch milliseconds."""

from __future__ import annotations

import pytest

from ledger.errors import UsageError
from projections.times import iso_ms, parse_as_of


@pytest.mark.parametrize(("text", "ms"), [
    ("1700000000123", 1_700_000_000_123),
    ("0", 0),
    ("2023-11-14T22:13:20Z", 1_700_000_000_000),
    ("2023-11-14T22:13:20.123Z", 1_700_000_000_123),
    ("2023-11-14T22:13:20", 1_700_000_000_000),  # no zone: UTC
    ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
    ("2023-11-14", 1_699_920_000_000),  # a date: its midnight, UTC
    ("2023-11-14T22:13:20.123999Z", 1_700_000_000_123),  # sub-ms: floor
])
def test_parse(text: str, ms: int) -> None:
    assert parse_as_of(text) == ms


@pytest.mark.parametrize("text", ["yesterday", "", "2023-13-01", "12:00"])
def test_rejects_nonsense_as_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--as-of"):
        parse_as_of(text)


def test_iso_round_trip() -> None:
    for ms in (0, 1_700_000_000_123, 1_700_000_000_007):
        assert parse_as_of(iso_ms(ms)) == ms
    assert iso_ms(1_700_000_000_007) == "2023-11-14T22:13:20.007Z"
    assert iso_ms(None) == ""
