"""The deduplication window: when a command id is remembered, and when a command is too old.

A command carries when it was issued. Within the window a retried id gets its first
outcome; a command issued before the window starts is `expired` and never applied, so
an id whose outcome has been forgotten can never be applied again. For a command id
that is a UUIDv7 (what the client generates) the time in the id is the issued time:
a retry of such an id cannot escape the window by carrying a newer timestamp.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ledger.domain.decide import Rejected, RejectReason

DAY_MS = 24 * 60 * 60 * 1000
DEFAULT_WINDOW_MS = 7 * DAY_MS
# Clocks of clients and processors disagree a little; a command from further ahead than
# this would stretch how long its id must be kept, so it is refused.
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000


@dataclass(frozen=True)
class DedupWindow:
    length_ms: int = DEFAULT_WINDOW_MS
    max_skew_ms: int = MAX_CLOCK_SKEW_MS

    def __post_init__(self) -> None:
        if self.length_ms <= 0:
            raise ValueError("the deduplication window must be positive")

    def refusal(self, issued_at_ms: int, now_ms: int) -> Rejected | None:
        """Why a command issued at `issued_at_ms` may not be decided at `now_ms`, or None.

        The edge is exact: issued exactly `length_ms` ago is still inside.
        """
        if issued_at_ms < now_ms - self.length_ms:
            return Rejected(
                RejectReason.EXPIRED,
                f"issued at {issued_at_ms} ms, before the deduplication window "
                f"({self.length_ms} ms) that starts at {now_ms - self.length_ms} ms",
            )
        if issued_at_ms > now_ms + self.max_skew_ms:
            return Rejected(
                RejectReason.INVALID_COMMAND,
                f"issued at {issued_at_ms} ms, more than {self.max_skew_ms} ms in the future",
            )
        return None

    def forget_after(self, decided_at_ms: int) -> int:
        """When an outcome decided at `decided_at_ms` may be forgotten.

        A command is decided after it is issued, so by then every retry of it is expired.
        """
        return decided_at_ms + self.length_ms + self.max_skew_ms


def issued_time(command_id: str, issued_at_ms: int) -> int:
    """The issued time of a command: the time in a UUIDv7 id, else the record's field."""
    if len(command_id) != 36 or command_id[14] != "7":
        return issued_at_ms
    try:
        parsed = uuid.UUID(command_id)
    except ValueError:
        return issued_at_ms
    if parsed.version != 7 or str(parsed) != command_id:
        return issued_at_ms
    return parsed.int >> 80
