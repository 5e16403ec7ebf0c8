"""The live projector against the real broker: exactness across stores, crashes, bad data."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from ledger.kafka import make_consumer
from ledger.settings import Settings
from ledger.wire import Codec
from ledger.wiring import build_projector
from projections.checksum import balance_checksum
from projections.factory import open_store
from projections.log import watermarks
from projections.sql_store import SqlProjectionStore
from projections.verify import verify
from tests.integration.journal_factory import (
    Journal,
    JournalWriter,
    audit_keys,
    expected_audit,
    fresh_pg_url,
    ledger_argv,
    make_events,
    make_journal,
    store_state,
    write_journal,
)

pytestmark = pytest.mark.integration
MakeSettings = Callable[..., Settings]


def project(settings: Settings, url: str, batch_records: int = 50_000) -> None:
    with open_store(url) as store:
        build_projector(settings, store, until_caught_up=True, batch_records=batch_records).run()


def assert_exact(store: SqlProjectionStore, journal: Journal, settings: Settings) -> None:
    balances, rows = store_state(store)
    assert balances == journal.balances()
    assert audit_keys(rows) == expected_audit(journal, settings.topic("events"))
    assert max(rows.values()) == 1  # no row twice


def ends(settings: Settings) -> dict[tuple[str, int], int]:
    consumer = make_consumer(settings, None)
    try:
        topics = [settings.topic("accounts"), settings.topic("events")]
        return {k: hi for k, (_, hi) in watermarks(consumer, settings, topics).items()}
    finally:
        consumer.close()


def test_duckdb_and_postgres_get_identical_projections(
        make_settings: MakeSettings, postgres_url: str, tmp_path: Path) -> None:
    settings = make_settings(partitions=3)
    journal = write_journal(settings, 3_000, txn_size=400)
    urls = [f"duckdb:///{tmp_path / 'p.duckdb'}", fresh_pg_url(postgres_url)]
    states, checksums = [], []
    for url in urls:
        project(settings, url, batch_records=700)
        with open_store(url) as store:
            assert isinstance(store, SqlProjectionStore)
            assert_exact(store, journal, settings)
            states.append((store_state(store),
                           sorted(store.sql("SELECT * FROM accounts")),
                           store.positions()))
            report = verify(settings, store)
            assert report.ok, report.violations
            checksums.append(report.checksum)
    assert states[0] == states[1]
    assert checksums[0] == checksums[1] == balance_checksum(journal.balances().items())
    assert states[0][2] == ends(settings)
    assert len(states[0][1]) == len(journal.accounts)


def test_resumes_from_stored_positions(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(partitions=2)
    url = f"duckdb:///{tmp_path / 'r.duckdb'}"
    first = write_journal(settings, 1_000, seed=1)
    project(settings, url)
    second = make_events(700, seed=2, start_ms=first.last_ms() + 1)
    with JournalWriter(settings) as w:
        w.transaction(w.event_records(second[:300]))
        w.transaction(w.event_records(second[300:]), abort=True)  # a tail that never was
        w.transaction(w.event_records(second[300:]))
        combined = Journal(first.events + second, first.accounts)
        combined.coordinates = {**first.coordinates}
        w._record_coordinates(combined)
    project(settings, url, batch_records=97)
    with open_store(url) as store:
        assert isinstance(store, SqlProjectionStore)
        assert_exact(store, combined, settings)
        assert store.positions() == ends(settings)


def test_kill_9_mid_batch_repeatedly_then_exact(make_settings: MakeSettings,
                                                tmp_path: Path) -> None:
    settings = make_settings(partitions=3)
    journal = write_journal(settings, 40_000, txn_size=2_000)
    url = f"duckdb:///{tmp_path / 'k.duckdb'}"
    base = ledger_argv(settings, url, "-v")
    argv = [*base, "project", "--batch-records", "400", "--batch-ms", "20"]
    rng = random.Random(3)
    seen = []
    for _ in range(5):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:  # wait until it owns partitions and works
            lines.append(line)
            if b" assigned " in line:
                break
        else:
            pytest.fail(f"projector exited early: {b''.join(lines).decode(errors='replace')}")
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with open_store(url) as store:
            seen.append(sum(o for (t, _), o in store.positions().items()
                            if t == settings.topic("events")))
    total = sum(o for (t, _), o in ends(settings).items() if t == settings.topic("events"))
    assert sum(1 for s in seen if 0 < s < total) >= 2, f"kills did not land mid-stream: {seen}"
    done = subprocess.run([*base, "project", "--until-caught-up"], capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    with open_store(url) as store:
        assert isinstance(store, SqlProjectionStore)
        assert_exact(store, journal, settings)


def test_poison_records_go_to_the_dead_letter_topic(make_settings: MakeSettings,
                                                    tmp_path: Path, codec: Codec) -> None:
    settings = make_settings(partitions=2)
    journal = make_journal(400, seed=5)
    events, accounts = settings.topic("events"), settings.topic("accounts")
    poison = [(events, b"user:u1", b"\xc3\x01garbage"),
              (events, b"user:u2", codec.header("event") + b"\xff\xff\xff"),
              (accounts, b"room:x", b"not avro at all")]
    with JournalWriter(settings) as w:
        w.write_journal(journal, txn_size=150, balances=False)
        before = len(w.written)
        w.transaction(poison)
        coords = {(x.topic, x.partition, x.offset): (x.key, x.value) for x in w.written[before:]}
        more = make_events(200, seed=6, start_ms=journal.last_ms() + 1)
        w.transaction(w.event_records(more))
        full = Journal(journal.events + more, journal.accounts, coordinates=journal.coordinates)
        w._record_coordinates(full)
        w.transaction(w.balance_records(full.balances()))
    url = f"duckdb:///{tmp_path / 'd.duckdb'}"
    with open_store(url) as store:
        stats = build_projector(settings, store, until_caught_up=True).run()
        assert stats.dead_letters == 3
        assert isinstance(store, SqlProjectionStore)
        assert_exact(store, full, settings)
        report = verify(settings, store)
    assert [v.check for v in report.violations] == ["deadletter"]
    assert "3 journal records were dead-lettered" in report.violations[0].detail
    lettered = read_dead_letters(settings)
    assert {k: (m[0], m[1]) for k, m in lettered.items()} == coords
    for (topic, p, o), (_, _, error) in lettered.items():
        assert error, f"no error header on {topic}[{p}]@{o}"


def read_dead_letters(settings: Settings) -> dict[tuple[str, int, int], tuple[bytes, bytes, str]]:
    consumer = make_consumer(settings, None)
    topic = settings.topic("deadletter")
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
    out: dict[tuple[str, int, int], tuple[bytes, bytes, str]] = {}
    deadline = time.monotonic() + 20
    while len(out) < 3 and time.monotonic() < deadline:
        for m in consumer.consume(100, 0.5):
            h = {k: v.decode() for k, v in list(m.headers() or []) if isinstance(v, bytes)}
            out[(h["source_topic"], int(h["source_partition"]), int(h["source_offset"]))] = (
                m.key() or b"", m.value() or b"", h["error"])
    consumer.close()
    return out


def test_unknown_fingerprint_stops_with_a_clear_message(make_settings: MakeSettings,
                                                        tmp_path: Path, codec: Codec) -> None:
    settings = make_settings(partitions=1)
    journal = make_journal(50, seed=8)
    alien = bytearray(codec.encode("event", journal.events[0]))
    alien[2:10] = bytes.fromhex("0123456789abcdef")
    with JournalWriter(settings) as w:
        w.write_journal(journal, balances=False)
        w.transaction([(settings.topic("events"), b"user:u1", bytes(alien))])
        bad_offset = w.written[-1].offset
        w.transaction(w.event_records(make_events(20, seed=9)))
    url = f"duckdb:///{tmp_path / 'u.duckdb'}"
    run = subprocess.run([*ledger_argv(settings, url), "project", "--until-caught-up"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "unknown writer schema fingerprint 0123456789abcdef" in run.stderr
    assert f"offset {bad_offset}" in run.stderr and "Traceback" not in run.stderr
    with open_store(url) as store:
        assert store.positions().get((settings.topic("events"), 0), 0) <= bad_offset


def test_positions_below_the_log_start_stop_the_projector(make_settings: MakeSettings,
                                                          tmp_path: Path) -> None:
    from ledger.kafka import make_admin

    settings = make_settings(partitions=1)
    write_journal(settings, 300, txn_size=50)
    url = f"duckdb:///{tmp_path / 'l.duckdb'}"
    with open_store(url) as store:
        store.claim_positions([(settings.topic("events"), 0)])  # stored: 0
    admin = make_admin(settings)
    for fut in admin.delete_records([TopicPartition(settings.topic("events"), 0, 100)]).values():
        fut.result()
    run = subprocess.run([*ledger_argv(settings, url), "project", "--until-caught-up"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 3, run.stderr
    assert "below its log start offset 100" in run.stderr and "Traceback" not in run.stderr
    again = subprocess.run([*ledger_argv(settings, url), "replay"], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 3 and "starts at offset 100, not 0" in again.stderr


def test_two_projectors_share_postgres_and_survive_a_kill(
        make_settings: MakeSettings, postgres_url: str, tmp_path: Path) -> None:
    settings = make_settings(partitions=6)
    first = write_journal(settings, 6_000, seed=11, txn_size=500)
    url = fresh_pg_url(postgres_url)
    conf = tmp_path / "fast-failover.properties"
    conf.write_text("session.timeout.ms=6000\nheartbeat.interval.ms=500\n")
    argv = [*ledger_argv(settings, url, "--kafka-config", str(conf), "-v"), "project",
            "--batch-records", "300", "--batch-ms", "20"]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
             for log in logs]
    try:
        wait_for(lambda: all(owns_events(log, settings) for log in logs), 60, "both own partitions")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        second = make_events(6_000, seed=12, start_ms=first.last_ms() + 1)
        with JournalWriter(settings) as w:
            w.transaction(w.event_records(second))
            full = Journal(first.events + second, first.accounts, coordinates=first.coordinates)
            w._record_coordinates(full)
        target = ends(settings)
        with open_store(url) as store:
            wait_for(lambda: store.positions() == target, 90, "the survivor to catch up")
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(30) == 0
        with open_store(url) as store:
            assert isinstance(store, SqlProjectionStore)
            assert_exact(store, full, settings)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def owns_events(log: Path, settings: Settings) -> bool:
    lines = [x for x in log.read_text(errors="replace").splitlines() if " assigned " in x]
    return bool(lines) and settings.topic("events") + "[" in lines[-1]


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
