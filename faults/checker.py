"""The history checker: a history held against what Kafka committed.

The client logs every command as *invoked*, then completes it once: *ok* (the outcome was
accepted), *failed* (rejected, with its reason) or *unknown* (no outcome in time, or the
send failed: it may or may not have been applied). The checker holds that history against
what Kafka committed, read independently of the processor:

- every ok command is in the journal exactly once (keyed by deciding account and command
  id: command ids are scoped per deciding account, and a journal record's Kafka key is its
  deciding account), with the postings its command asked for;
- no failed command is in the journal; an unknown one at most once;
- nothing is in the journal that no client invoked;
- no balance snapshot on points.<prefix>.balances is below its floor (every record of
  that compacted changelog, not only the latest per account);
- the latest snapshot of every user and room account equals the fold of the journal (for
  a room, this is every routed credit applied once: one lost or applied twice shows);
- every rejection's reason is true as far as the history's real-time order can prove:
  no `unknown_account` for an account whose open was accepted before the command was
  invoked, no `insufficient_points` when the account surely held enough, no `misrouted`,
  `account_closed`, `expired` or `conflict` at all for commands the client sent well formed.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

from faults.history import (
    EARN,
    FAILED,
    INVOKED,
    JOIN,
    OK,
    OPEN,
    REVERSE,
    SPEND,
    UNKNOWN,
    History,
    Op,
)
from faults.observed import JournalEvent, Snapshot, read_journal_events, read_snapshots
from faults.report import CheckOptions, HistoryReport
from ledger.domain import (
    is_valid_account,
)
from ledger.settings import Settings


def check_log(history: History, settings: Settings,
              options: CheckOptions | None = None) -> HistoryReport:
    """check_history against what the settings' topics hold now."""
    opts = options or CheckOptions(max_amount=settings.max_amount)
    return check_history(history, read_journal_events(settings), read_snapshots(settings), opts)


def check_history(
    history: History | Iterable[Op],
    journal: Iterable[JournalEvent],
    snapshots: Iterable[Snapshot],
    settings: Settings | CheckOptions | None = None,
) -> HistoryReport:
    """Hold the history against the committed journal and balance snapshots.

    `snapshots` in log order per partition (as read); final balances are only meaningful
    once the processors are idle and every routed credit was applied. `settings`: the
    ledger's (for its amount limit) or the checker's own options.
    """
    if isinstance(settings, CheckOptions):
        opts = settings
    else:
        opts = CheckOptions(max_amount=settings.max_amount if settings else 1_000_000_000)
    ops = list(history)
    events = list(journal)
    snaps = list(snapshots)
    report = HistoryReport(ops=len(ops), journal_events=len(events), snapshots=len(snaps))

    def add(check: str, op_or_cid: Op | str | None, account: str | None, detail: str) -> None:
        cid = op_or_cid.command_id if isinstance(op_or_cid, Op) else op_or_cid
        report.add(check, cid, account, detail, opts.examples)

    by_key: dict[tuple[str, str], list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
        if op.status == OK:
            report.ok += 1
        elif op.status == FAILED:
            report.failed += 1
            report.reasons[op.reason or "?"] += 1
        else:
            report.unknown += 1
            report.in_flight += op.status == INVOKED
    for key, same in by_key.items():
        if len(same) > 1 and len({(o.kind, o.other, o.amount) for o in same}) > 1:
            add("reused_id", key[1], key[0], f"{len(same)} different commands share this id")

    written: dict[tuple[str, str], list[JournalEvent]] = defaultdict(list)
    for ev in events:
        written[(ev.key, ev.command_id)].append(ev)
        total = sum(a for _, a in ev.postings)
        if total != 0:
            add("unbalanced", ev.command_id, ev.key, f"event {ev.event_id} sums to {total}")

    _check_journal(ops, by_key, written, report, add)
    _check_snapshots(snaps, events, by_key, report, add)
    _check_journal_floors(ops, events, snaps, add)
    if opts.reasons:
        _check_reasons(ops, by_key, report, add, opts)
    return report


Add = Callable[[str, "Op | str | None", "str | None", str], None]


def _expects_event(op: Op) -> bool:
    """An accepted command of this op writes one journal event (an open only with a grant)."""
    return op.kind != OPEN or op.amount > 0


def _expected_postings(op: Op) -> dict[str, int] | None:
    """The user/room side of the op's journal event (None: not known from the op alone)."""
    if op.kind in (OPEN, EARN):
        return {op.account: op.amount}
    if op.kind == SPEND:
        return {op.account: -op.amount}
    if op.kind == JOIN and op.other is not None:
        return {op.account: -op.amount, op.other: op.amount}
    return None


def _check_journal(ops: list[Op], by_key: dict[tuple[str, str], list[Op]],
                   written: dict[tuple[str, str], list[JournalEvent]], report: HistoryReport,
                   add: Add) -> None:
    for key, evs in written.items():
        if len(evs) > 1:
            report.duplicated += len(evs) - 1
            where = ", ".join(f"{e.partition}@{e.offset}" for e in evs[:4])
            seen_as = "/".join(sorted({o.status for o in by_key.get(key, [])}))
            add("duplicated", key[1], key[0],
                f"{len(evs)} journal events ({seen_as or 'never invoked'}) at {where}")
        if key not in by_key:
            add("phantom", key[1], key[0],
                f"journal event {evs[0].event_id} ({evs[0].kind}) of a command never invoked")
    seen: set[tuple[str, str]] = set()
    for op in ops:
        if op.key in seen:  # a resent id: judged once, on its first op
            continue
        seen.add(op.key)
        same = by_key[op.key]
        statuses = {o.status for o in same}
        evs = written.get(op.key, [])
        if OK in statuses:
            if not evs and any(_expects_event(o) for o in same if o.status == OK):
                report.lost += 1
                add("lost", op, op.account,
                    f"{op.describe()} accepted, not in the journal")
            elif evs and not any(_expects_event(o) for o in same):
                add("stray", op, op.account, f"{op.describe()} should write no event")
        elif FAILED in statuses and evs:
            failed = next(o for o in same if o.status == FAILED)
            add("rejected_applied", op, op.account,
                f"{op.describe()} rejected ({failed.reason}: {failed.detail}) but journaled "
                f"as {evs[0].event_id} at {evs[0].partition}@{evs[0].offset}")
        elif statuses <= {UNKNOWN, INVOKED}:
            if evs:
                report.unknown_applied += 1
            else:
                report.unknown_not_applied += 1
        if evs:
            want = _expected_postings(op)
            got = _party_postings(evs[0].postings)
            if want is not None and got != want:
                add("payload", op, op.account,
                    f"{op.describe()} journaled with postings {sorted(got.items())}")


def _party_postings(postings: Iterable[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for account, amount in postings:
        if not account.startswith("system:"):
            out[account] = out.get(account, 0) + amount
    return out


def _check_snapshots(snaps: list[Snapshot], events: list[JournalEvent],
                     by_key: dict[tuple[str, str], list[Op]], report: HistoryReport,
                     add: Add) -> None:
    latest: dict[str, Snapshot] = {}
    for s in snaps:
        if s.balance < s.floor:
            add("below_floor", None, s.account,
                f"snapshot at {s.partition}@{s.offset}: balance {s.balance} below floor {s.floor}")
        latest[s.account] = s
    fold: Counter[str] = Counter()
    credits: dict[str, list[str]] = defaultdict(list)  # room -> journal events crediting it
    for ev in events:
        for account, amount in ev.postings:
            if account.startswith("system:"):
                continue
            fold[account] += amount
            if amount > 0 and account != ev.key:
                credits[account].append(ev.command_id)
    for account in sorted(set(fold) | set(latest)):
        if account.startswith("system:"):
            continue
        snap = latest.get(account)
        have = snap.balance if snap is not None else 0
        want = fold.get(account, 0)
        if have == want:
            continue
        routed = credits.get(account, [])
        if routed:
            what = "a routed credit lost" if have < want else "a routed credit applied twice"
            add("credit" if have < want else "credit_twice", None, account,
                f"latest snapshot {have}, journal fold {want} (off by {have - want}): {what}? "
                f"{len(routed)} credits routed here, e.g. {routed[:3]}")
        else:
            add("final_balance", None, account,
                f"latest snapshot {have if snap else 'missing'}, journal fold {want}")


def _check_journal_floors(ops: list[Op], events: list[JournalEvent], snaps: list[Snapshot],
                          add: Add) -> None:
    """The journal itself (the truth) never takes a user or room below its floor.

    A user's balance moves only by events keyed by the user (its own owner decides them),
    so its running fold in its partition's log order must stay at or above the floor: the
    first event that breaks it is named. A room is credited by joins keyed by users on
    other partitions, so only its final fold is held to the floor.
    """
    floors = {s.account: s.floor for s in snaps}
    floors.update({op.account: op.floor for op in ops if op.kind == OPEN and op.status == OK})
    running: Counter[str] = Counter()
    breached: set[str] = set()
    final: Counter[str] = Counter()
    for ev in events:
        for account, amount in ev.postings:
            if account.startswith("system:"):
                continue
            final[account] += amount
            if account == ev.key and account.startswith("user:"):
                running[account] += amount
                floor = floors.get(account, 0)
                if running[account] < floor and account not in breached:
                    breached.add(account)
                    add("overdrawn", ev.command_id, account,
                        f"the journal takes it to {running[account]} (floor {floor}) with "
                        f"event {ev.event_id} ({ev.kind} {amount}) at {ev.partition}@{ev.offset}")
    for account, balance in sorted(final.items()):
        floor = floors.get(account, 0)
        if account.startswith("room:") and balance < floor:
            add("overdrawn", None, account,
                f"the journal's final balance {balance} is below its floor {floor}")


def _check_reasons(ops: list[Op], by_key: dict[tuple[str, str], list[Op]],
                   report: HistoryReport, add: Add, opts: CheckOptions) -> None:
    """Rejections the history proves false (sound: never flags an honest rejection)."""
    per_account: dict[str, list[Op]] = defaultdict(list)
    opens: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        per_account[op.account].append(op)
        if op.kind == JOIN and op.other:
            per_account[op.other].append(op)
        if op.kind == OPEN:
            opens[op.account].append(op)
    reversed_accounts = {a for a, lst in per_account.items() if any(o.kind == REVERSE for o in lst)}
    sums = _Ledger(ops)

    def opened_before(account: str, t: float, slack: float = 0.0) -> Op | None:
        """An open of `account` accepted before time t - slack."""
        for o in opens.get(account, []):
            if o.status == OK and o.done_at + slack < t:
                return o
        return None

    for op in ops:
        if op.status != FAILED:
            continue
        reason = op.reason or ""
        if reason in ("misrouted", "account_closed", "expired", "invalid_command",
                      "already_applied"):
            add(f"reason_{reason}", op, op.account,
                f"{op.describe()} rejected {reason} ({op.detail}): never true of a client "
                f"command here")
        elif reason == "unknown_account":
            named = op.account
            if op.kind == JOIN and op.other and op.detail.startswith(f"{op.other} "):
                named = op.other
            slack = opts.room_visibility_s if named != op.account else 0.0
            o = opened_before(named, op.invoked_at, slack)
            if o is not None:
                add("reason_unknown_account", op, named,
                    f"{op.describe()} rejected unknown_account ({op.detail}), but the open "
                    f"{o.command_id} of {named} was accepted "
                    f"{op.invoked_at - o.done_at:.1f}s before it was invoked")
        elif reason == "account_exists":
            others = [o for o in opens.get(op.account, []) if o is not op
                      and o.status != FAILED and o.invoked_at < op.done_at]
            if not others:
                add("reason_account_exists", op, op.account,
                    f"open rejected account_exists ({op.detail}) with no other open of it")
        elif reason == "conflict":
            if len({(o.kind, o.other, o.amount) for o in by_key[op.key]}) == 1:
                add("reason_conflict", op, op.account,
                    f"{op.describe()} rejected as conflict; its id was never used otherwise")
        elif reason in ("invalid_amount", "invalid_account"):
            problem = _invalid(op, opts.max_amount)
            if problem is None:
                add(f"reason_{reason}", op, op.account,
                    f"{op.describe()} rejected {reason} ({op.detail}) but it is valid")
        elif reason == "insufficient_points" and op.account not in reversed_accounts:
            opened = opened_before(op.account, op.invoked_at)
            held = sums.surely_held(op, opened) if opened is not None else None
            if opened is not None and held is not None and held - op.amount >= opened.floor:
                add("reason_insufficient_points", op, op.account,
                    f"{op.describe()} rejected insufficient_points ({op.detail}), but the "
                    f"account surely held at least {held} (floor {opened.floor})")


def _invalid(op: Op, max_amount: int) -> str | None:
    """Why the op's command is malformed (then invalid_* is honest), or None."""
    accounts = [op.account] + ([op.other] if op.kind == JOIN and op.other else [])
    for a in accounts:
        if not is_valid_account(a) or a.startswith("system:"):
            return f"bad account {a}"
    if op.kind == JOIN and not (op.account.startswith("user:") and
                                (op.other or "").startswith("room:")):
        return "join needs a user and a room"
    if op.kind == OPEN:
        ok = 0 <= op.amount <= max_amount and op.floor <= op.amount \
            and -max_amount <= op.floor <= max_amount
        return None if ok else "grant or floor out of range"
    if op.kind in (EARN, SPEND, JOIN) and not 0 < op.amount <= max_amount:
        return f"amount {op.amount}"
    return None


class _Ledger:
    """Per account, the sums the insufficient_points bound needs, found by bisection."""

    def __init__(self, ops: list[Op]) -> None:
        earns: dict[str, list[tuple[float, int]]] = defaultdict(list)
        debits: dict[str, list[tuple[float, int]]] = defaultdict(list)
        for o in ops:
            if o.kind == EARN and o.status == OK:
                earns[o.account].append((o.done_at, o.amount))
            elif o.kind in (SPEND, JOIN) and o.status != FAILED:  # the deciding side pays
                debits[o.account].append((o.invoked_at, o.amount))
        self.earns = {a: _prefix(v) for a, v in earns.items()}
        self.debits = {a: _prefix(v) for a, v in debits.items()}

    @staticmethod
    def _before(table: tuple[list[float], list[int]] | None, t: float) -> int:
        if table is None:
            return 0
        times, sums = table
        return sums[bisect.bisect_left(times, t)]

    def surely_held(self, op: Op, opened: Op) -> int:
        """A lower bound on the balance of op.account when `op` was decided.

        Counted in: the open's grant and the earns accepted before `op` was invoked (its
        own owner applied them first). Counted out: every debit that may have been applied
        before `op` was decided (accepted, unknown or in flight, invoked before `op`
        completed). Routed credits (a room's join fees) are left out: they arrive when
        they arrive.
        """
        return (opened.amount + self._before(self.earns.get(op.account), op.invoked_at)
                - self._before(self.debits.get(op.account), op.done_at))


def _prefix(pairs: list[tuple[float, int]]) -> tuple[list[float], list[int]]:
    """(sorted times, sums[i] = total of the first i amounts)."""
    pairs.sort()
    return [t for t, _ in pairs], [0, *itertools.accumulate(a for _, a in pairs)]
