"""The CLI speaks one way: ISO-8601 UTC timestamps with milliseconds in JSON, one summary
object for replay and project, exit 4 for an outcome not known in time, tail's
--partition/--offset/--max-records, and `ledger deadletters`."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from ledger.settings import Settings
from projections.ingest import BadRecord
from projections.kafka import KafkaDeadLetterSink
from tests.integration.journal_factory import Journal, ledger_argv, write_journal

pytestmark = pytest.mark.integration
MakeSettings = Callable[..., Settings]
Run = Callable[..., tuple[int, str, str]]
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def journal(make_settings: MakeSettings, tmp_path: Path) -> tuple[Settings, Journal]:
    settings = make_settings(partitions=2)
    settings = settings.with_(store=f"duckdb:///{tmp_path / 'cli.duckdb'}")
    return settings, write_journal(settings, 120, seed=7, txn_size=40)


@pytest.fixture
def ledger(capsys: pytest.CaptureFixture[str], journal: tuple[Settings, Journal]) -> Run:
    settings, _ = journal

    def run(*args: str) -> tuple[int, str, str]:
        argv = ["--bootstrap", settings.bootstrap, "--topic-prefix", settings.topic_prefix,
                "--store", settings.store, *args]
        with pytest.raises(SystemExit) as e:
            main(argv)
        out, err = capsys.readouterr()
        return int(e.value.code or 0), out, err

    return run


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def one_error(result: tuple[int, str, str], code: int) -> str:
    got, out, err = result
    assert got == code, (got, out, err)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_timestamps_in_json_are_iso_utc_with_milliseconds(
        ledger: Run, journal: tuple[Settings, Journal]) -> None:
    _, written = journal
    code, out, _ = ledger("tail", "--from-beginning", "--no-follow", "--json")
    events = lines(out)
    assert code == 0 and len(events) == len(written.events)
    for e in events:
        assert ISO_MS.match(e["occurred_at"]) and isinstance(e["occurred_at_ms"], int)
    by_id = {e["event_id"]: e for e in written.events}
    first = events[0]
    assert first["occurred_at_ms"] == by_id[first["event_id"]]["occurred_at"]

    assert ledger("project", "--until-caught-up")[0] == 0
    code, out, _ = ledger("history", "user:u1", "--json")
    rows = lines(out)
    assert code == 0 and rows
    assert all(ISO_MS.match(r["occurred_at"]) and isinstance(r["occurred_at_ms"], int)
               for r in rows)
    code, out, _ = ledger("query", "SELECT account, updated_at FROM balances "
                          "WHERE account = 'user:u1'", "--json")
    (row,) = lines(out)
    assert ISO_MS.match(row["updated_at"]) and row["updated_at"] == rows[-1]["occurred_at"]
    code, out, _ = ledger("query", "SELECT updated_at FROM balances WHERE account = 'user:u1'",
                          "--csv")
    assert out.splitlines()[1] == row["updated_at"]


def test_replay_and_project_print_one_summary_object(
        ledger: Run, journal: tuple[Settings, Journal], tmp_path: Path) -> None:
    _, written = journal
    code, out, _ = ledger("project", "--until-caught-up", "--json")
    (summary,) = lines(out)
    assert code == 0 and summary["events"] == len(written.events)
    assert {"records", "dead_lettered", "batches", "seconds", "store"} <= summary.keys()

    as_of = sorted(e["occurred_at"] for e in written.events)[59]
    code, out, _ = ledger("replay", "--out", str(tmp_path / "r.duckdb"), "--as-of", str(as_of),
                          "--json")
    (summary,) = lines(out)
    assert code == 0 and summary["events"] == 60 and summary["left_out_after_as_of"] == 60
    assert summary["as_of_ms"] == as_of and ISO_MS.match(summary["as_of"])
    assert {"accounts", "checksum", "records", "undecodable", "seconds", "events_per_s",
            "store"} <= summary.keys()


def test_replay_progress_off_a_terminal_is_log_lines(journal: tuple[Settings, Journal],
                                                     tmp_path: Path) -> None:
    settings, _ = journal
    run = subprocess.run([*ledger_argv(settings), "replay", "--out", str(tmp_path / "p.duckdb"),
                          "--progress"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr
    assert re.search(r"Z INFO ledger.progress: replay 100\.0% .* events/s, left 0:00:00",
                     run.stderr), run.stderr


def test_tail_takes_partition_offset_and_max_records(
        ledger: Run, journal: tuple[Settings, Journal]) -> None:
    _, written = journal
    mine = sorted((o, eid) for eid, (p, o) in written.coordinates.items() if p == 1)
    start = mine[len(mine) // 2][0]
    want = [eid for o, eid in mine if o >= start]
    code, out, _ = ledger("tail", "--partition", "1", "--offset", str(start), "--no-follow",
                          "--json")
    assert code == 0 and [e["event_id"] for e in lines(out)] == want
    assert {e["partition"] for e in lines(out)} == {1}
    code, out, _ = ledger("tail", "--partition", "1", "--offset", str(start), "--json",
                          "--max-records", "2")  # follows, but stops after two
    assert code == 0 and [e["event_id"] for e in lines(out)] == want[:2]
    code, out, _ = ledger("tail", "--partition", "1", "--offset", "1000000", "--no-follow")
    assert code == 0 and out == ""  # past the end: at the end, not back at the start
    one_error(ledger("tail", "--partition", "5", "--no-follow"), 2)
    one_error(ledger("tail", "--from-beginning", "--offset", "3"), 2)


def test_deadletters_lists_each_record_with_its_origin(
        ledger: Run, journal: tuple[Settings, Journal]) -> None:
    settings, _ = journal
    code, out, _ = ledger("deadletters")
    assert code == 0 and out == ""
    sink = KafkaDeadLetterSink(settings)
    events = settings.topic("events")
    sink.send([BadRecord(events, 1, 17, b"user:x", b"\x00garbage", "MalformedRecordError: no"),
               BadRecord(events, 0, 3, None, None, "TruncatedRecordError: short\nsecond line")])
    sink.close()

    code, out, _ = ledger("deadletters", "--json")
    letters = sorted(lines(out), key=lambda d: d["source_offset"])
    assert code == 0 and len(letters) == 2
    short, bad = letters
    assert (bad["source_topic"], bad["source_partition"], bad["source_offset"]) == (events, 1, 17)
    assert bad["error"] == "MalformedRecordError: no" and bad["key"] == "user:x"
    assert bad["value_bytes"] == 8 and ISO_MS.match(bad["timestamp"])
    assert isinstance(bad["timestamp_ms"], int) and bad["headers"] == {}
    assert short["key"] == "" and short["value_bytes"] == 0

    code, out, _ = ledger("deadletters")
    text = sorted(out.splitlines(), key=lambda line: "[1]@17" in line)
    assert code == 0 and len(text) == 2
    assert f"from {events}[0]@3 key '', 0 bytes: TruncatedRecordError: short second line" \
        in text[0]
    assert f"from {events}[1]@17 key 'user:x', 8 bytes: MalformedRecordError: no" in text[1]
    code, out, _ = ledger("deadletters", "--max-records", "1")
    assert code == 0 and len(out.splitlines()) == 1


def test_a_command_sent_without_an_outcome_exits_4_naming_it(ledger: Run) -> None:
    code, out, err = ledger("earn", "user:u1", "5", "--command-id", "no-processor-1", "--wait",
                            "--timeout", "1", "--json")
    line = one_error((code, out, err), 4)
    assert "no-processor-1" in line and "--command-id no-processor-1 --wait" in line
    assert lines(out) == [{"command_id": "no-processor-1", "status": "unknown"}]


def test_a_command_not_sent_stays_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--bootstrap", "127.0.0.1:1", "earn", "user:u1", "5", "--wait", "--timeout", "1"])
    assert e.value.code == 3 and "127.0.0.1:1" in capsys.readouterr().err
