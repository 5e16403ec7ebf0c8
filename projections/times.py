"""Points in time given by people: ISO-8601 or epoch milliseconds, always UTC-based."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ledger.errors import UsageError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_as_of(text: str) -> int:
    """Epoch ms of an ISO-8601 time (no zone = UTC; a date alone = its midnight) or of
    an integer (epoch milliseconds)."""
    raw = text.strip()
    if raw.lstrip("-").isdigit():
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"--as-of {text!r} is neither an ISO-8601 time "
                         "(2024-05-01T12:00:00Z) nor epoch milliseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)


def iso_ms(ms: int | None) -> str:
    """2024-05-01T12:00:00.000Z for an epoch-ms value ('' for None)."""
    if ms is None:
        return ""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
