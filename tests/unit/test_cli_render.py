"""JSON output's timestamps, progress off a terminal, and the exit codes' one table."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from cli.render import dumps, iso, moment, progress
from ledger.errors import (
    ExitCode,
    InfrastructureError,
    JournalMismatchError,
    QueryError,
    RejectedError,
    UsageError,
    WaitTimeoutError,
)

ISO = "2026-12-05T12:00:00.123Z"
MS = 1_796_472_000_123


def test_naive_and_aware_datetimes_are_utc_with_milliseconds() -> None:
    naive = datetime(2026, 12, 5, 12, 0, 0, 123_456)  # the stores' TIMESTAMP: UTC
    assert iso(naive) == ISO
    assert iso(naive.replace(tzinfo=UTC)) == ISO
    assert iso(datetime(2026, 12, 5, 13, 0, 0, 123_000, timezone(timedelta(hours=1)))) == ISO
    assert iso(datetime(2026, 12, 5)) == "2026-12-05T00:00:00.000Z"


def test_json_output_turns_times_into_iso_and_keeps_epoch_ms_beside() -> None:
    assert moment("occurred_at", MS) == {"occurred_at": ISO, "occurred_at_ms": MS}
    assert moment("as_of", None) == {"as_of": None, "as_of_ms": None}
    row = json.loads(dumps({"t": datetime(2026, 12, 5, 12, 0, 0, 123_000), "d": date(2026, 1, 2)}))
    assert row == {"t": ISO, "d": "2026-01-02"}


def test_progress_off_a_terminal_is_log_lines_not_carriage_returns(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    show = progress("replay", terminal=False)
    with caplog.at_level(logging.INFO, logger="ledger.progress"):
        show(10, 100)  # the first call shows
        show(20, 100)  # too soon for another line
        show(100, 100)  # the end always shows
    lines = [r.getMessage() for r in caplog.records if r.name == "ledger.progress"]
    assert len(lines) == 2 and lines[0].startswith("replay 10.0% 10/100 records")
    assert lines[1].startswith("replay 100.0% 100/100 records")
    assert "\r" not in capsys.readouterr().err


def test_progress_on_a_terminal_redraws_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    show = progress("replay", terminal=True)
    show(100, 100)
    err = capsys.readouterr().err
    assert err.startswith("\rreplay [") and err.endswith("\n")


@pytest.mark.parametrize(("error", "code"), [
    (RejectedError, 1), (UsageError, 2), (QueryError, 2), (JournalMismatchError, 2),
    (InfrastructureError, 3), (WaitTimeoutError, 4)])
def test_each_error_family_has_its_exit_code(error: type[Exception], code: int) -> None:
    assert error("x").exit_code == code  # type: ignore[attr-defined]
    assert ExitCode(code).value == code


def test_an_unknown_outcome_is_not_unreachable() -> None:
    assert not issubclass(WaitTimeoutError, InfrastructureError)
