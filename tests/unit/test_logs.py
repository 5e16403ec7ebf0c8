"""Log lines: UTC timestamps with milliseconds, JSON objects, the level from
LEDGER_LOG_LEVEL or -v, and the services' start and stop lines at the default level."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from cli.logs import JsonFormatter, TextFormatter, configure_logging
from cli.main import cli
from ledger.health import LIFECYCLE
from ledger.settings import ENV_LOG_LEVEL

KAFKA = logging.getLogger("ledger.kafka")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, levels = root.handlers[:], [(x, x.level) for x in (root, LIFECYCLE, KAFKA)]
    yield
    root.handlers[:] = handlers
    for logger, level in levels:
        logger.setLevel(level)


def _record(msg: str = "hello %s", *args: object) -> logging.LogRecord:
    record = logging.LogRecord("ledger.test", logging.INFO, __file__, 1, msg, args, None)
    # 2026-12-05T12:00:00.125Z: an eighth of a second is exact in binary.
    record.created = datetime(2026, 12, 5, 12, tzinfo=UTC).timestamp() + 0.125
    record.msecs = 125.0
    return record


def test_json_lines_carry_iso_utc_timestamps_with_milliseconds() -> None:
    line = JsonFormatter().format(_record("hello %s", "world"))
    assert json.loads(line) == {"ts": "2026-12-05T12:00:00.125Z", "level": "info",
                                "logger": "ledger.test", "msg": "hello world"}


def test_text_lines_carry_the_same_timestamps() -> None:
    assert TextFormatter().format(_record("hi")) == (
        "2026-12-05T12:00:00.125Z INFO ledger.test: hi")


def _shown(capsys: pytest.CaptureFixture[str]) -> list[str]:
    logging.getLogger("ledger.processor").info("an info line")
    logging.getLogger("ledger.processor").warning("a warning")
    LIFECYCLE.info("serve started")
    return [line.split(" ", 1)[1] for line in capsys.readouterr().err.splitlines()]


def test_default_level_shows_warnings_and_the_start_and_stop_lines(
        capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    assert _shown(capsys) == ["WARNING ledger.processor: a warning",
                              "INFO ledger.lifecycle: serve started"]
    assert KAFKA.level == logging.CRITICAL  # librdkafka's retries stay quiet by default


@pytest.mark.parametrize(("level", "verbose", "shown"), [
    ("WARNING", 0, ["a warning", "serve started"]),
    ("error", 0, []),
    ("INFO", 0, ["an info line", "a warning", "serve started"]),
    ("ERROR", 1, ["an info line", "a warning", "serve started"]),  # -v lowers any level
    (None, 2, ["an info line", "a warning", "serve started"]),
])
def test_level_from_the_environment_lowered_by_verbose(
        capsys: pytest.CaptureFixture[str], level: str | None, verbose: int,
        shown: list[str]) -> None:
    configure_logging("text", verbose, level)
    assert [line.split(": ", 1)[1] for line in _shown(capsys)] == shown


def test_ledger_log_level_reaches_the_cli_and_a_bad_one_is_a_usage_error() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["tail", "--help"], env={ENV_LOG_LEVEL: "debug"})
    assert result.exit_code == 0, result.output
    assert logging.getLogger().level == logging.DEBUG
    assert KAFKA.level == logging.DEBUG
    result = runner.invoke(cli, ["tail", "--help"], env={ENV_LOG_LEVEL: "loud"})
    assert result.exit_code == 2
    assert "'loud' is not one of" in result.output
