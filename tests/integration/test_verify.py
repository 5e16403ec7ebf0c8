"""`ledger verify`: passes on an honest store, names every kind of damage, exits 1."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from confluent_kafka import KafkaError, Message, Producer

from ledger.settings import Settings
from ledger.wire import Codec
from ledger.wiring import build_projector
from projections.checksum import balance_checksum
from projections.factory import open_store
from projections.ingest import Ingest
from projections.sql_store import SqlProjectionStore
from projections.verify import VerifyReport, verify
from tests.integration.journal_factory import (
    Event,
    Journal,
    JournalWriter,
    fresh_pg_url,
    key_of,
    ledger_argv,
    make_events,
    make_journal,
    write_journal,
)

pytestmark = pytest.mark.integration
MakeSettings = Callable[..., Settings]


def projected(settings: Settings, url: str) -> None:
    with open_store(url) as store:
        build_projector(settings, store, until_caught_up=True).run()


def checks(report: VerifyReport) -> set[str]:
    return {v.check for v in report.violations}


def test_cli_json_on_an_honest_store(make_settings: MakeSettings, postgres_url: str) -> None:
    settings = make_settings(partitions=3)
    journal = write_journal(settings, 1_500, txn_size=200)
    url = fresh_pg_url(postgres_url)
    projected(settings, url)
    run = subprocess.run([*ledger_argv(settings, url), "verify", "--json"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (line,) = run.stdout.splitlines()
    out = json.loads(line)
    assert out == {"ok": True, "events": len(journal.events),
                   "accounts": len(journal.balances()),
                   "checksum": balance_checksum(journal.balances().items()), "violations": []}


def test_damaged_store_fails_with_a_readable_report(make_settings: MakeSettings,
                                                    tmp_path: Path) -> None:
    settings = make_settings(partitions=2)
    write_journal(settings, 800, txn_size=200)
    url = f"duckdb:///{tmp_path / 'v.duckdb'}"
    projected(settings, url)
    with open_store(url) as store:
        assert isinstance(store, SqlProjectionStore)
        store.sql("UPDATE balances SET balance = balance + 5 WHERE account = 'user:u3'")
        store.sql("DELETE FROM audit_log WHERE account = 'room:r1' AND posting = 1")
    run = subprocess.run([*ledger_argv(settings, url), "verify"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    assert run.stdout.startswith("verify FAILED")
    assert "[balance_vs_audit]" in run.stdout and "user:u3" in run.stdout
    assert "[audit_vs_log]" in run.stdout and "[balances_topic]" in run.stdout
    assert "Traceback" not in run.stderr


def test_journal_defects_and_a_lagging_store(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(partitions=2)
    journal = make_journal(300, seed=41)
    broken = {**journal.events[0], "event_id": "bad-1",
              "postings": [{"account": "user:broke", "amount": -50},
                           {"account": "system:spent", "amount": 40}]}
    with JournalWriter(settings) as w:
        w.write_journal(journal, balances=False)
        w.transaction(w.event_records([broken]))
        full = Journal([*journal.events, broken], journal.accounts)
        w.transaction(w.balance_records(full.balances()))
    url = f"duckdb:///{tmp_path / 'j.duckdb'}"
    projected(settings, url)
    with open_store(url) as store:
        report = verify(settings, store)
        assert checks(report) == {"unbalanced", "floor"}, report.violations
        assert "bad-1" in report.violations[0].detail
        assert report.checksum == balance_checksum(full.balances().items())
        with JournalWriter(settings) as w:
            w.transaction(w.event_records(make_events(10, seed=42)))
        assert "behind" in checks(verify(settings, store))


def test_processor_snapshots_that_disagree_are_a_violation(make_settings: MakeSettings,
                                                           tmp_path: Path) -> None:
    settings = make_settings(partitions=2)
    journal = write_journal(settings, 500, seed=43)
    url = f"duckdb:///{tmp_path / 's.duckdb'}"
    projected(settings, url)
    wrong = {"user:u7": journal.balances()["user:u7"] + 1, "room:ghost": 9}
    with JournalWriter(settings) as w:
        w.transaction(w.balance_records(wrong))
    with open_store(url) as store:
        report = verify(settings, store)
    assert checks(report) == {"balances_topic"}
    detail = report.violations[0].detail
    assert detail.startswith("2 user/room balances differ") and "room:ghost" in detail
    assert "user:u7" in detail


# -- the journal's own defects: ids that repeat, and a second decoding ------------------------

def produce_raw(settings: Settings, records: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
    """(key, value) records into the journal with a plain, non-transactional producer;
    returns where each landed as (partition, offset)."""
    landed: list[tuple[int, int]] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        landed.append((msg.partition() or 0, msg.offset() or 0))

    producer = Producer({"bootstrap.servers": settings.bootstrap, **settings.kafka_extra,
                         "partitioner": "murmur2_random", "enable.idempotence": True})
    for key, value in records:
        producer.produce(settings.topic("events"), key=key, value=value, on_delivery=on_delivery)
        producer.flush(30)  # one at a time: landed is in the order given
    assert len(landed) == len(records)
    return landed


def tampered_journal(settings: Settings, extra: Callable[[list[Event]], list[tuple[str, Event]]],
                     n: int = 400, seed: int = 51) -> tuple[Journal, list[tuple[int, int]]]:
    """A committed journal, then raw (key, event) records appended to it, then balance
    snapshots of the whole, so that only the defect under test is a violation."""
    journal = make_journal(n, seed=seed)
    records = extra(journal.events)
    codec = Codec()
    with JournalWriter(settings) as w:
        w.write_journal(journal, balances=False)
        landed = produce_raw(settings, [(k.encode(), codec.encode("event", e)) for k, e in records])
        full = Journal([*journal.events, *(e for _, e in records)], journal.accounts,
                       coordinates=journal.coordinates)
        w.transaction(w.balance_records(full.balances(), full.last_ms()))
    return full, landed


def verified(settings: Settings, tmp_path: Path) -> tuple[VerifyReport, str]:
    url = f"duckdb:///{tmp_path / (settings.topic_prefix + '.duckdb')}"
    projected(settings, url)
    with open_store(url) as store:
        return verify(settings, store), url


def first(events: list[Event], kind: str) -> Event:
    return next(e for e in events if e["kind"] == kind)


def test_an_event_written_twice_fails_verify_and_the_cli(make_settings: MakeSettings,
                                                         tmp_path: Path) -> None:
    settings = make_settings(partitions=2)

    def again(events: list[Event]) -> list[tuple[str, Event]]:
        earned = first(events, "EARNED")
        return [(key_of(earned), earned), (key_of(earned), earned)]  # the same bytes, twice

    journal, landed = tampered_journal(settings, again)
    earned = journal.events[-1]
    report, url = verified(settings, tmp_path)
    assert checks(report) == {"duplicate_event_id"}, report.violations
    (violation,) = report.violations
    p, o = journal.coordinates[earned["event_id"]]
    assert violation.detail.startswith("1 event ids occur in more than one record")
    assert [q for q, _ in landed] == [p, p]  # one key, one partition
    copies = ", ".join(f"[{p}]@{offset}" for offset in (o, landed[0][1], landed[1][1]))
    assert f"{earned['event_id']} at {copies} " in violation.detail + " "
    run = subprocess.run([*ledger_argv(settings, url), "verify", "--json"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    out = json.loads(run.stdout)
    assert out["ok"] is False and out["violations"] == [violation.as_dict()]
    run = subprocess.run([*ledger_argv(settings, url), "verify"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 1 and run.stdout.startswith("verify FAILED (1 violations)")
    assert f"  [duplicate_event_id] {violation.detail}" in run.stdout
    assert "Traceback" not in run.stderr


def test_a_command_decided_twice_by_one_key(make_settings: MakeSettings,
                                            tmp_path: Path) -> None:
    settings = make_settings(partitions=2)
    twice: dict[str, Event] = {}

    def decided_again(events: list[Event]) -> list[tuple[str, Event]]:
        twice["first"] = first(events, "EARNED")
        twice["again"] = {**twice["first"], "event_id": "a-second-event-for-one-command"}
        return [(key_of(twice["first"]), twice["again"])]

    tampered_journal(settings, decided_again)
    report, _ = verified(settings, tmp_path)
    assert checks(report) == {"duplicate_command_id"}, report.violations
    detail = report.violations[0].detail
    assert detail.startswith("1 (record key, command id) pairs were decided by more than one")
    key, command = key_of(twice["first"]), twice["first"]["command_id"]
    assert f"key {key!r}, command id {command!r} at " in detail
    assert twice["first"]["event_id"] in detail and "a-second-event-for-one-command" in detail


def test_one_command_id_under_two_keys_passes(make_settings: MakeSettings,
                                             tmp_path: Path) -> None:
    settings = make_settings(partitions=2)

    def same_command_other_user(events: list[Event]) -> list[tuple[str, Event]]:
        earned = first(events, "EARNED")
        other = "user:u999" if key_of(earned) != "user:u999" else "user:u998"
        twin = {**earned, "event_id": "the-other-users-event",
                "postings": [{"account": "system:rewards", "amount": -5},
                             {"account": other, "amount": 5}]}
        assert key_of(twin) == other != key_of(earned)
        return [(other, twin)]

    journal, _ = tampered_journal(settings, same_command_other_user)
    report, _ = verified(settings, tmp_path)
    assert report.ok, report.violations
    assert report.events == len(journal.events)


def test_a_target_reversed_twice(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(partitions=2)
    reversal: dict[str, Event] = {}

    def reversed_again(events: list[Event]) -> list[tuple[str, Event]]:
        # A reversal whose postings can be applied again without overdrawing anyone.
        final = Journal(events, []).balances()
        reversal["first"] = next(
            e for e in events if e["kind"] == "REVERSED"
            and all(final[p["account"]] + p["amount"] >= 0 for p in e["postings"]
                    if not p["account"].startswith("system:")))
        reversal["again"] = {**reversal["first"], "event_id": "reversed-again",
                             "command_id": "reverse-again"}
        return [(key_of(reversal["again"]), reversal["again"])]

    tampered_journal(settings, reversed_again)
    report, _ = verified(settings, tmp_path)
    assert checks(report) == {"double_reversal"}, report.violations
    detail = report.violations[0].detail
    target = reversal["first"]["reverses_event_id"]
    assert detail.startswith("1 events were reversed by more than one REVERSED event")
    assert f"{target} at " in detail
    assert reversal["first"]["event_id"] in detail and "reversed-again" in detail


def test_a_hot_decoder_bug_shows_as_a_checksum_mismatch(make_settings: MakeSettings,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay's decoder misreads an account, in the projector and in verify's own
    reading alike: the store agrees with that reading, not with fastavro's (which runs in
    verify's worker processes, where this patch does not reach)."""
    settings = make_settings(partitions=2)
    journal = write_journal(settings, 400, seed=52)
    real_audit = Ingest.audit

    def misread(self: Ingest) -> pa.Table:
        audit = real_audit(self)
        account = pc.replace_substring(audit["account"], "user:u1", "user:x1")
        return audit.set_column(audit.schema.get_field_index("account"), "account", account)

    monkeypatch.setattr(Ingest, "audit", misread)
    report, _ = verified(settings, tmp_path)
    assert "checksum_vs_log" in checks(report), report.violations
    (detail,) = [v.detail for v in report.violations if v.check == "checksum_vs_log"]
    assert report.checksum != balance_checksum(journal.balances().items())
    assert detail == (f"the store's balance checksum {report.checksum} differs from "
                      f"{balance_checksum(journal.balances().items())}, the checksum of "
                      "balances folded from the journal decoded by fastavro's generic reader")
