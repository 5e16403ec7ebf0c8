"""Log configuration: text for people, JSON lines for log shippers; UTC timestamps."""

from __future__ import annotations

import json
import logging
import sys
import time

from ledger.health import LIFECYCLE

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_LEVEL = "WARNING"


def utc_timestamp(record: logging.LogRecord) -> str:
    """ISO-8601 in UTC with milliseconds: 2026-12-05T12:00:00.123Z."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": utc_timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record)


def configure_logging(fmt: str = "text", verbose: int = 0, level: str | None = None) -> None:
    """The root logger at `level` (LEDGER_LOG_LEVEL; WARNING if unset), lowered to INFO by
    -v and DEBUG by -vv. At WARNING the start and stop lines of `serve` and `project` (INFO)
    show as well; from ERROR up they do not."""
    chosen = logging.getLevelName((level or DEFAULT_LEVEL).upper())
    asked = logging.INFO if verbose == 1 else logging.DEBUG if verbose > 1 else chosen
    effective = min(chosen, asked)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(effective)
    LIFECYCLE.setLevel(logging.INFO if effective <= logging.WARNING else logging.NOTSET)
    # librdkafka complains loudly while a broker is down (one ERROR line per retry); our own
    # errors say it once. Its lines show from INFO on (errors) and fully at DEBUG.
    kafka_level = (logging.DEBUG if effective <= logging.DEBUG
                   else logging.ERROR if effective <= logging.INFO else logging.CRITICAL)
    logging.getLogger("ledger.kafka").setLevel(kafka_level)
