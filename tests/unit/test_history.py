"""The history checker on hand-built histories: what it accepts and what it must reject."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

from faults.checker import check_history
from faults.history import FAILED, OK, UNKNOWN, History, Op
from faults.observed import JournalEvent, Snapshot, journal_event_of, snapshot_of
from faults.report import CheckOptions, HistoryReport
from ledger.domain import Actor, Earn, Join, OpenAccount, Spend
from ledger.records import Outcome
from ledger.settings import Settings

SYS = Actor.SYSTEM


class Clock:
    """A hand-moved clock: every history time is explicit."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def hist() -> History:
    return History(clock=Clock())


def opened(h: History, account: str, grant: int = 0, status: str = OK, cid: str = "") -> Op:
    op = h.invoke(OpenAccount(command_id=cid or f"open-{account}", actor=SYS, reason="r",
                              account=account, grant=grant))
    _complete(h, op, status)
    return op


def earned(h: History, account: str, amount: int, cid: str, status: str = OK,
           reason: str = "", detail: str = "") -> Op:
    op = h.invoke(Earn(command_id=cid, actor=SYS, reason="r", account=account, amount=amount))
    _complete(h, op, status, reason, detail)
    return op


def spent(h: History, account: str, amount: int, cid: str, status: str = OK,
          reason: str = "", detail: str = "") -> Op:
    op = h.invoke(Spend(command_id=cid, actor=SYS, reason="r", account=account, amount=amount))
    _complete(h, op, status, reason, detail)
    return op


def joined(h: History, user: str, room: str, fee: int, cid: str, status: str = OK,
           reason: str = "", detail: str = "") -> Op:
    op = h.invoke(Join(command_id=cid, actor=SYS, reason="r", user=user, room=room, fee=fee))
    _complete(h, op, status, reason, detail)
    return op


def _complete(h: History, op: Op, status: str, reason: str = "", detail: str = "") -> None:
    if status == OK:
        h.ok(op)
    elif status == FAILED:
        h.fail(op, reason, detail)
    elif status == UNKNOWN:
        h.unknown(op, "timed out")


def ev(key: str, cid: str, *postings: tuple[str, int], kind: str = "EARNED",
       offset: int = 0) -> JournalEvent:
    return JournalEvent(key, cid, f"e-{key}-{cid}-{offset}", kind, tuple(postings), 0, offset)


def issue(account: str, cid: str, amount: int, offset: int = 0) -> JournalEvent:
    return ev(account, cid, ("system:rewards", -amount), (account, amount), offset=offset)


def spend_ev(account: str, cid: str, amount: int) -> JournalEvent:
    return ev(account, cid, (account, -amount), ("system:spent", amount), kind="SPENT")


def join_ev(user: str, room: str, cid: str, fee: int) -> JournalEvent:
    return ev(user, cid, (user, -fee), (room, fee), kind="JOINED")


def snaps(**balances: int) -> list[Snapshot]:
    return [Snapshot(a.replace("_", ":", 1), b, 0) for a, b in balances.items()]


def checks(report: HistoryReport) -> dict[str, int]:
    return dict(report.counts)


# --- a history it must accept ---------------------------------------------------------------


def a_valid_run() -> tuple[History, list[JournalEvent], list[Snapshot]]:
    h = hist()
    opened(h, "user:a", grant=100)
    opened(h, "room:r")  # no grant: no journal event
    earned(h, "user:a", 20, "c1")
    spent(h, "user:a", 30, "c2")
    joined(h, "user:a", "room:r", 50, "c3")
    spent(h, "user:a", 500, "c4", FAILED, "insufficient_points", "user:a has 40")
    earned(h, "user:a", 7, "c5", UNKNOWN)  # applied after all
    earned(h, "user:a", 9, "c6", UNKNOWN)  # never applied
    spent(h, "room:r", 10, "c7")
    journal = [
        issue("user:a", "open-user:a", 100),
        issue("user:a", "c1", 20, 1),
        spend_ev("user:a", "c2", 30),
        join_ev("user:a", "room:r", "c3", 50),
        issue("user:a", "c5", 7, 4),
        spend_ev("room:r", "c7", 10),
    ]
    log = [Snapshot("user:a", 100, 0), Snapshot("room:r", 0, 0), Snapshot("user:a", 47, 0),
           Snapshot("room:r", 50, 0), Snapshot("room:r", 40, 0)]
    return h, journal, log


def test_a_valid_history_passes() -> None:
    h, journal, log = a_valid_run()
    report = check_history(h, journal, log, Settings())
    assert report.valid, report.summary()
    assert (report.lost, report.duplicated) == (0, 0)
    assert (report.ok, report.failed, report.unknown) == (6, 1, 2)
    assert (report.unknown_applied, report.unknown_not_applied) == (1, 1)
    assert report.reasons == {"insufficient_points": 1}
    assert "valid" in report.summary()


def test_command_ids_are_scoped_by_deciding_account() -> None:
    h = hist()
    opened(h, "user:a", 10)
    opened(h, "user:b", 10)
    earned(h, "user:a", 5, "same")
    earned(h, "user:b", 6, "same")
    journal = [issue("user:a", "open-user:a", 10), issue("user:b", "open-user:b", 10),
               issue("user:a", "same", 5), issue("user:b", "same", 6)]
    report = check_history(h, journal, snaps(user_a=15, user_b=16))
    assert report.valid, report.summary()


# --- histories it must reject -------------------------------------------------------------


def test_lost_accepted_command() -> None:
    h, journal, log = a_valid_run()
    journal = [e for e in journal if e.command_id != "c2"]
    report = check_history(h, journal, log)
    assert report.lost == 1
    assert report.counts["lost"] == 1
    assert any(v.command_id == "c2" and v.check == "lost" for v in report.violations)
    assert not report.valid


def test_duplicated_accepted_command() -> None:
    h, journal, log = a_valid_run()
    journal.append(issue("user:a", "c1", 20, offset=9))
    report = check_history(h, journal, log)
    assert report.duplicated == 1 and report.counts["duplicated"] == 1
    assert report.violations[0].command_id == "c1"
    # The fold now holds 20 more than the snapshot says.
    assert report.counts["final_balance"] == 1


def test_rejected_command_in_the_journal() -> None:
    h, journal, log = a_valid_run()
    journal.append(spend_ev("user:a", "c4", 500))
    report = check_history(h, journal, log)
    assert report.counts["rejected_applied"] == 1
    assert "insufficient_points" in str(report.violations[0])


def test_unknown_command_applied_twice() -> None:
    h, journal, log = a_valid_run()
    journal.append(issue("user:a", "c5", 7, offset=7))
    report = check_history(h, journal, log)
    assert report.duplicated == 1 and report.counts["duplicated"] == 1


def test_event_of_a_command_never_invoked() -> None:
    h, journal, log = a_valid_run()
    journal.append(issue("user:a", "ghost", 3))
    report = check_history(h, journal, log)
    assert report.counts["phantom"] == 1
    # An event under another deciding account is not the command's event either.
    h2 = hist()
    opened(h2, "user:a")
    earned(h2, "user:a", 5, "x")
    report2 = check_history(h2, [issue("user:b", "x", 5)], snaps(user_a=0, user_b=5))
    assert report2.counts["phantom"] == 1 and report2.lost == 1


def test_snapshot_below_floor_anywhere_in_the_changelog() -> None:
    h, journal, log = a_valid_run()
    log.insert(2, Snapshot("user:a", -5, 0, 1, 17))
    report = check_history(h, journal, log)
    assert checks(report) == {"below_floor": 1}
    assert "1@17" in report.violations[0].detail


def test_final_balance_differs_from_the_fold() -> None:
    h, journal, log = a_valid_run()
    log.append(Snapshot("user:a", 46, 0))
    report = check_history(h, journal, log)
    assert checks(report) == {"final_balance": 1}


def test_routed_credit_lost_or_applied_twice() -> None:
    h, journal, log = a_valid_run()
    lost = check_history(h, journal, [*log, Snapshot("room:r", -10, -100)])
    assert checks(lost) == {"credit": 1}
    assert "c3" in lost.violations[0].detail
    twice = check_history(h, journal, [*log, Snapshot("room:r", 90, 0)])
    assert checks(twice) == {"credit_twice": 1}


def test_accepted_command_journaled_with_other_postings() -> None:
    h, journal, log = a_valid_run()
    journal = [issue("user:a", "c1", 21, 1) if e.command_id == "c1" else e for e in journal]
    report = check_history(h, journal, [*log[:-3], Snapshot("user:a", 48, 0), *log[-2:]])
    assert checks(report) == {"payload": 1}


# --- rejection reasons held against the history ----------------------------------------------


def test_unknown_account_after_an_accepted_open_is_false() -> None:
    h = hist()
    opened(h, "user:a", 0)
    earned(h, "user:a", 5, "late", FAILED, "unknown_account", "user:a is not open")
    report = check_history(h, [], snaps(user_a=0))
    assert checks(report) == {"reason_unknown_account": 1}
    assert report.violations[0].command_id == "late"


def test_unknown_account_concurrent_with_the_open_is_honest() -> None:
    h = hist()
    op_open = h.invoke(OpenAccount(command_id="o", actor=SYS, reason="r", account="user:a"))
    earned(h, "user:a", 5, "early", FAILED, "unknown_account", "user:a is not open")
    h.ok(op_open)  # the open completed after the earn was invoked: either order is possible
    earned(h, "user:b", 5, "never", FAILED, "unknown_account", "user:b is not open")
    assert check_history(h, [], snaps(user_a=0)).valid


def test_room_unknown_to_a_join_gets_a_visibility_grace() -> None:
    clock_times = iter(range(1000))
    h = History(clock=lambda: float(next(clock_times)))
    opened(h, "user:a", 50)
    opened(h, "room:r")  # ok at t=3
    joined(h, "user:a", "room:r", 5, "soon", FAILED, "unknown_account", "room:r is not open")
    journal = [issue("user:a", "open-user:a", 50)]
    log = snaps(user_a=50, room_r=0)
    assert check_history(h, journal, log, CheckOptions(room_visibility_s=5)).valid
    strict = check_history(h, journal, log, CheckOptions(room_visibility_s=0))
    assert checks(strict) == {"reason_unknown_account": 1}
    assert strict.violations[0].account == "room:r"


def test_misrouted_closed_expired_are_never_true_here() -> None:
    h = hist()
    opened(h, "user:a", 10)
    earned(h, "user:a", 1, "m", FAILED, "misrouted", "key routes elsewhere")
    earned(h, "user:a", 1, "c", FAILED, "account_closed")
    earned(h, "user:a", 1, "x", FAILED, "expired")
    report = check_history(h, [issue("user:a", "open-user:a", 10)], snaps(user_a=10))
    assert checks(report) == {"reason_misrouted": 1, "reason_account_closed": 1,
                              "reason_expired": 1}


def test_insufficient_points_when_surely_enough_is_false() -> None:
    h = hist()
    opened(h, "user:a", 100)
    earned(h, "user:a", 50, "e1")
    spent(h, "user:a", 120, "s1", FAILED, "insufficient_points", "user:a has 30")
    report = check_history(h, [issue("user:a", "open-user:a", 100), issue("user:a", "e1", 50)],
                           snaps(user_a=150))
    assert checks(report) == {"reason_insufficient_points": 1}
    assert "at least 150" in report.violations[0].detail


def test_insufficient_points_with_a_debit_in_flight_is_honest() -> None:
    h = hist()
    opened(h, "user:a", 100)
    other = h.invoke(Spend(command_id="s0", actor=SYS, reason="r", account="user:a",
                           amount=90))
    spent(h, "user:a", 20, "s1", FAILED, "insufficient_points", "user:a has 10")
    h.ok(other)
    journal = [issue("user:a", "open-user:a", 100), spend_ev("user:a", "s0", 90)]
    assert check_history(h, journal, snaps(user_a=10)).valid
    # An earn still in flight proves nothing either.
    h2 = hist()
    opened(h2, "user:a", 10)
    pending = h2.invoke(Earn(command_id="e", actor=SYS, reason="r", account="user:a",
                             amount=100))
    spent(h2, "user:a", 50, "s", FAILED, "insufficient_points")
    h2.ok(pending)
    journal2 = [issue("user:a", "open-user:a", 10), issue("user:a", "e", 100)]
    assert check_history(h2, journal2, snaps(user_a=110)).valid


def test_account_exists_without_another_open_is_false() -> None:
    h = hist()
    opened(h, "user:a", 0, FAILED)
    h.ops[0].reason = "account_exists"
    report = check_history(h, [], [])
    assert checks(report) == {"reason_account_exists": 1}
    h2 = hist()
    opened(h2, "user:a", 0, OK, cid="o1")
    opened(h2, "user:a", 0, FAILED, cid="o2")
    h2.ops[1].reason = "account_exists"
    assert check_history(h2, [], snaps(user_a=0)).valid


def test_invalid_amount_of_a_valid_command_is_false() -> None:
    h = hist()
    opened(h, "user:a", 10)
    earned(h, "user:a", 5, "ok-amount", FAILED, "invalid_amount")
    earned(h, "user:a", 0, "zero", FAILED, "invalid_amount")
    report = check_history(h, [issue("user:a", "open-user:a", 10)], snaps(user_a=10))
    assert checks(report) == {"reason_invalid_amount": 1}
    assert report.violations[0].command_id == "ok-amount"


def test_reasons_can_be_left_unchecked() -> None:
    h = hist()
    opened(h, "user:a", 0)
    earned(h, "user:a", 5, "m", FAILED, "misrouted")
    assert check_history(h, [], snaps(user_a=0), CheckOptions(reasons=False)).valid


# --- the history itself ----------------------------------------------------------------------


def test_each_op_completes_once_and_late_outcomes_are_kept() -> None:
    h = hist()
    op = h.invoke(Earn(command_id="e", actor=SYS, reason="r", account="user:a", amount=1))
    assert h.pending() == [op]
    assert h.unknown(op, "timed out")
    assert not h.ok(op)
    assert op.status == UNKNOWN and op.late == "ok"
    assert h.expire() == 0


def test_expire_marks_everything_in_flight_unknown() -> None:
    h = hist()
    ops = [h.invoke(Earn(command_id=str(i), actor=SYS, reason="r", account="user:a",
                         amount=1)) for i in range(3)]
    h.ok(ops[0])
    assert h.expire("gave up") == 2
    assert h.counts() == {OK: 1, UNKNOWN: 2}
    assert ops[2].detail == "gave up"


def test_track_completes_from_the_clients_future() -> None:
    h = hist()
    ops = [h.invoke(Earn(command_id=str(i), actor=SYS, reason="r", account="user:a",
                         amount=1)) for i in range(3)]
    futures: list[Future[Outcome]] = [Future(), Future(), Future()]
    for op, f in zip(ops, futures, strict=True):
        h.track(op, f)
    futures[0].set_result(Outcome("0", True, None, "", ("e",), "user:a", ""))
    futures[1].set_result(Outcome("1", False, "insufficient_points", "has 0", (), "user:a", ""))
    futures[2].set_exception(TimeoutError("no outcome"))
    assert [o.status for o in ops] == [OK, FAILED, UNKNOWN]
    assert ops[1].reason == "insufficient_points" and ops[1].detail == "has 0"


def test_recording_from_many_threads() -> None:
    h = History()
    n, threads = 2000, 8

    def work(t: int) -> None:
        for i in range(n):
            op = h.invoke_raw("earn", f"{t}-{i}", f"user:u{t}", None, 1)
            (h.ok if i % 2 else h.unknown)(op)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(h) == n * threads
    assert sorted(op.index for op in h) == list(range(n * threads))
    assert h.counts() == {OK: n * threads // 2, UNKNOWN: n * threads // 2}


def test_decoded_records_become_checker_input() -> None:
    event = {"event_id": "e1", "command_id": "c1", "kind": "EARNED",
             "postings": [{"account": "system:rewards", "amount": -5},
                          {"account": "user:a", "amount": 5}]}
    assert journal_event_of("user:a", event, 2, 40) == JournalEvent(
        "user:a", "c1", "e1", "EARNED", (("system:rewards", -5), ("user:a", 5)), 2, 40)
    snap = {"account": "user:a", "balance": 5, "floor": 0, "is_open": True, "type": "USER",
            "updated_at": 0, "last_event_id": "e1"}
    assert snapshot_of(snap, 2, 7) == Snapshot("user:a", 5, 0, 2, 7)


def test_report_serialises() -> None:
    h = hist()
    opened(h, "user:a", 10)
    report = check_history(h, [], snaps(user_a=10))
    assert report.to_dict()["valid"] is False  # the grant's event is lost
    assert report.to_dict()["violations"][0].startswith("[lost]")


def test_report_counts_serialise_as_plain_mappings() -> None:
    h = hist()
    opened(h, "user:a", 0)
    earned(h, "user:a", 5, "m", FAILED, "misrouted")
    out = check_history(h, [], snaps(user_a=0)).to_dict()
    assert out["reasons"] == {"misrouted": 1}
    assert out["counts"] == {"reason_misrouted": 1}


def test_journal_that_overdraws_a_user_is_rejected_even_if_snapshots_agree() -> None:
    h = hist()
    opened(h, "user:a", 10)
    spent(h, "user:a", 8, "s1")
    spent(h, "user:a", 8, "s2")  # accepted on a stale balance
    earned(h, "user:a", 20, "e1")
    journal = [issue("user:a", "open-user:a", 10), spend_ev("user:a", "s1", 8),
               spend_ev("user:a", "s2", 8), issue("user:a", "e1", 20, 3)]
    report = check_history(h, journal, snaps(user_a=14))
    assert checks(report) == {"overdrawn": 1}
    assert report.violations[0].command_id == "s2"
    assert "to -6" in report.violations[0].detail


def test_room_judged_on_its_final_journal_balance() -> None:
    h = hist()
    opened(h, "user:a", 50)
    opened(h, "room:r")
    spent(h, "room:r", 5, "rs")  # journaled before the credit that funds it (other partition)
    joined(h, "user:a", "room:r", 10, "j")
    journal = [spend_ev("room:r", "rs", 5), issue("user:a", "open-user:a", 50),
               join_ev("user:a", "room:r", "j", 10)]
    assert check_history(h, journal, snaps(user_a=40, room_r=5)).valid
    journal.append(spend_ev("room:r", "rs2", 6))
    h2 = check_history(h, journal, snaps(user_a=40, room_r=-1))
    assert h2.counts["overdrawn"] == 1 and h2.counts["phantom"] == 1


def test_a_history_dumped_and_loaded_checks_the_same(tmp_path: Path) -> None:
    h, journal, log = a_valid_run()
    h.ops[3].late = "ok"
    h.dump(tmp_path / "h.jsonl")
    again = History.load(tmp_path / "h.jsonl")
    assert [vars_of(o) for o in again] == [vars_of(o) for o in h]
    assert check_history(again, journal, log).to_dict() == check_history(h, journal, log).to_dict()


def vars_of(op: Op) -> tuple[object, ...]:
    return tuple(getattr(op, f) for f in Op.__slots__)


def test_listeners_see_each_op_once_as_it_completes() -> None:
    h = hist()
    seen: list[tuple[str, str]] = []
    h.listeners.append(lambda op: seen.append((op.command_id, op.status)))
    op = h.invoke(Earn(command_id="e", actor=SYS, reason="r", account="user:a", amount=1))
    h.fail(op, "insufficient_points")
    h.ok(op)  # late: not completed again
    assert seen == [("e", FAILED)]
