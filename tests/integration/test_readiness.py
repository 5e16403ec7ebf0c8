"""/readyz of `serve` and `project`: 503 with a reason until the service can do its work
(assignment, store, lag), 200 once it can; and the start and stop lines at the default
log level."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import devstack
from devstack import postgres as dpg
from ledger.kafka import make_producer
from ledger.settings import Settings
from tests.integration.endpoints import free_port, get_json, scrape, wait_until
from tests.integration.journal_factory import ledger_argv, write_journal
from tests.integration.ledger_helpers import cli_args
from tests.integration.stacks import spawn, stop
from tests.integration.test_db_outage import private_pg  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


def _reason(port: int, path: str = "/readyz") -> Callable[[], str]:
    """A probe for wait_until: the reason `path` gives, once it gives one."""
    return lambda: str(get_json(port, path)[1].get("reason", ""))


def _ready(port: int) -> Callable[[], bool]:
    return lambda: get_json(port, "/readyz")[0] == 200


def test_serve_is_ready_once_its_partitions_are_assigned(settings: Settings,
                                                         tmp_path: Path) -> None:
    """A transaction left open on a changelog holds the new owner's restore (it waits for
    the previous owner's writes to settle), so the assignment cannot complete until the
    test ends that transaction."""
    holder = make_producer(settings, f"{settings.topic_prefix}-holder")
    holder.init_transactions(30)
    holder.begin_transaction()
    holder.produce(settings.topic("balances"), key=b"user:held", value=b"x", partition=0)
    holder.flush(10)
    port, log = free_port(), tmp_path / "serve.log"
    proc = spawn([*cli_args(settings), "serve", "--instance-id", "ready", "--metrics-port",
                  str(port), "--metrics-host", "127.0.0.1", "--ready-max-lag", "100"], log)
    try:
        wait_until("/healthz to answer 200", lambda: get_json(port, "/healthz")[0] == 200)
        reason = wait_until("the brokers to be asked", lambda: (
            r if (r := _reason(port)()) != "brokers not asked yet" else None))
        code, body = get_json(port, "/readyz")
        assert (code, body) == (503, {"ok": False, "reason": "no partition assignment yet"}), \
            (reason, log.read_text()[-2000:])
        holder.abort_transaction(30)
        wait_until("/readyz to answer 200", _ready(port))
        assert get_json(port, "/readyz")[1] == {"ok": True}
    finally:
        assert stop(proc) == 0, log.read_text()[-2000:]
    text = log.read_text()
    started = (rf"INFO ledger.lifecycle: serve started: instance ready, brokers "
               rf"{re.escape(settings.bootstrap)}, topics {settings.topic_prefix}\.\*, "
               rf"state .*, metrics http://127\.0\.0\.1:{port}\n")
    assert re.search(started, text), text
    assert "processor ready owns partitions [0, 1, 2]" in text
    assert "serve stopped: instance ready" in text
    assert "restored:" not in text  # an INFO line of the processor's own: not by default


def test_projector_is_not_ready_while_its_database_is_down(
    make_settings: Callable[..., Settings], private_pg: tuple[Path, int],  # noqa: F811
    tmp_path: Path,
) -> None:
    home, pg_port = private_pg
    url = f"postgresql+psycopg://postgres:secret@127.0.0.1:{pg_port}/ledger"
    settings = make_settings(partitions=3)
    write_journal(settings, 500)
    port, log = free_port(), tmp_path / "project.log"
    proc = spawn([*ledger_argv(settings, url), "project", "--batch-ms", "50",
                  "--metrics-port", str(port)], log)
    try:
        wait_until("/readyz to answer 200 (caught up)", _ready(port))
        devstack.down(home)  # Postgres stops under an idle projector
        reason = wait_until("/readyz to name the database", _reason(port))
        assert "unavailable" in reason and f"127.0.0.1:{pg_port}" in reason, reason
        assert "secret" not in reason
        assert get_json(port, "/readyz")[0] == 503
        assert get_json(port, "/healthz")[0] == 200  # alive: waiting, not stuck
        dpg.up(home, port=pg_port)
        wait_until("/readyz to answer 200 again", _ready(port))
    finally:
        assert stop(proc) == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert re.search(r"project started: .*store postgresql\+psycopg://postgres:\*\*\*@127",
                     text), text
    assert "secret" not in text
    assert "projector assigned " in text and "project stopped: " in text


def test_projector_is_not_ready_while_lag_exceeds_the_threshold(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A few records per store transaction: the backlog takes seconds to drain, and until
    the worst partition is within --ready-max-lag of its end the projector is not ready."""
    settings = make_settings(partitions=3)
    journal = write_journal(settings, 600)
    port, log = free_port(), tmp_path / "project.log"
    proc = spawn([*ledger_argv(settings, f"duckdb:///{tmp_path / 'lag.duckdb'}"), "project",
                  "--batch-records", "5", "--metrics-port", str(port), "--ready-max-lag",
                  "20"], log)
    try:
        reason = wait_until("/readyz to name the lag", lambda: (
            r if (r := _reason(port)()).startswith("consumer lag") else None))
        assert re.fullmatch(r"consumer lag \d+ records on .+\[\d\] > --ready-max-lag 20",
                            reason), reason
        wait_until("/readyz to answer 200 once caught up", _ready(port), timeout=180)
        metrics: dict[Any, float] = scrape(port)
    finally:
        assert stop(proc) == 0, log.read_text()[-2000:]
    events = metrics[("ledger_projected_events_total", ())]
    assert events >= len(journal.events) - 20 * 3
    lag = [v for (name, _), v in metrics.items() if name == "ledger_consumer_lag_records"]
    assert len(lag) == 6 and max(lag) <= 20
