"""`ledger demo` end to end on the session's broker: play, replay, verify, summary."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import pytest

import devstack
from ledger.settings import ENV_BOOTSTRAP, default_home

pytestmark = pytest.mark.integration


def test_demo_plays_the_study_room_app_and_verifies_the_replay(bootstrap: str,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "demo.duckdb"
    argv = [sys.executable, "-m", "cli.main", "--bootstrap", bootstrap,
            "--topic-prefix", f"demo{uuid.uuid4().hex[:8]}", "--partitions", "3",
            "--store", f"duckdb:///{tmp_path / 'live.duckdb'}",
            "demo", "--users", "40", "--rooms", "4", "--sessions", "200", "--joins", "300",
            "--reversals", "5", "--out", str(out)]
    env = {**os.environ, "LEDGER_HOME": str(tmp_path / "home")}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    # Progress while it runs, then the summary.
    assert "==> playing the study-room app" in done.stderr
    assert re.search(r"outcomes", done.stderr)
    summary = done.stdout
    verdict = re.search(r"verify: ok=True events=(\d+) accounts=(\d+)", summary)
    assert verdict, summary
    join_line = next(line for line in summary.splitlines() if line.strip().startswith("Join"))
    assert "accepted" in join_line and "rejected:insufficient_points" in join_line
    assert "top balances: " in summary and f"DuckDB file for analysts: {out}" in summary
    # It ends with a snapshot taken while the projector ran, and a question asked of it.
    snapshot = tmp_path / "demo-snapshot.duckdb"
    assert f"snapshot for analysts (taken while the projector ran): {snapshot}" in summary
    assert "Which rooms collected the most in join fees last week?" in summary
    assert re.search(r"room +fees +joins\n[- ]+\nroom:r\d", summary), summary
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        held = con.execute("SELECT count(DISTINCT event_id) FROM audit_log").fetchone()
    finally:
        con.close()
    assert held is not None and held[0] == int(verdict.group(1))

    # The sample query it suggests runs as printed.
    query = re.search(r'query "(.+)"', summary)
    assert query, summary
    answer = subprocess.run([sys.executable, "-m", "cli.main", "--store", f"duckdb:///{out}",
                             "query", query.group(1)], capture_output=True, text=True, env=env,
                            timeout=60)
    assert answer.returncode == 0 and "EARNED" in answer.stdout, answer.stderr

    con = duckdb.connect(str(out), read_only=True)
    try:
        events = con.execute("SELECT count(DISTINCT event_id) FROM audit_log").fetchone()
        kinds = {k for (k,) in con.execute("SELECT DISTINCT kind FROM audit_log").fetchall()}
        total = con.execute("SELECT sum(balance) FROM balances").fetchone()
        breaches = con.execute(
            "SELECT count(*) FROM balances b JOIN accounts a USING (account) "
            "WHERE a.type IN ('USER', 'ROOM') AND b.balance < a.floor").fetchone()
    finally:
        con.close()
    assert events is not None and events[0] == int(verdict.group(1))
    assert {"EARNED", "JOINED", "REVERSED"} <= kinds
    assert total == (0,) and breaches == (0,)


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_demo_starts_the_local_stack_when_no_broker_answers(tmp_path: Path) -> None:
    """No --bootstrap and nothing at localhost:9092: the demo runs `ledger dev up` itself."""
    if _answers(9092):
        pytest.skip("something answers at localhost:9092 (a dev stack?); this needs it free")
    home = tmp_path / "home"
    (home / "kafka-4.1.1").mkdir(parents=True)  # the jar cache, not a second Maven fetch
    (home / "kafka-4.1.1" / "lib").symlink_to(default_home() / "kafka-4.1.1" / "lib")
    out = tmp_path / "demo.duckdb"
    argv = [sys.executable, "-m", "cli.main", "--topic-prefix", f"demo{uuid.uuid4().hex[:8]}",
            "--partitions", "2", "--store", f"duckdb:///{tmp_path / 'live.duckdb'}",
            "demo", "--users", "10", "--rooms", "2", "--sessions", "30", "--joins", "30",
            "--reversals", "2", "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != ENV_BOOTSTRAP}
    env["LEDGER_HOME"] = str(home)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    finally:
        devstack.down(home, wipe=True)  # by the pids it recorded
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no broker at localhost:9092: starting the local stack" in done.stderr
    assert re.search(r"verify: ok=True events=\d+", done.stdout), done.stdout
    assert not _answers(9092)  # and stopped again
