"""`ledger verify`: the store against the journal, re-read from Kafka.

Checks: the store is caught up with the journal; every event balanced; audit rows
equal the postings in the log (count, events, sums per partition, up to the stored
positions); balances equal the sums of audit_log; no user or room below its floor
(final balances); no undecodable or dead-lettered journal records; user and room
balances equal the processor's latest snapshots on <prefix>.balances. Also an
order-independent checksum of balances, the same for DuckDB and Postgres, which must
equal the checksum of balances folded from a second, independent decoding of the
journal (projections/crosscheck.py, fastavro's generic reader); and no event id in two
journal records, no (record key, command id) pair decided by two events, no event
reversed twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer

from ledger.errors import CodecError
from ledger.kafka import make_consumer
from ledger.settings import Settings
from ledger.wire import Codec
from projections.checksum import balance_checksum
from projections.crosscheck import CrossCheck, Finding, Repeat
from projections.crosscheck_workers import CrossReading
from projections.deadletter import dead_lettered
from projections.ingest import Ingest
from projections.log import Ranges, check_message_error, read_ranges, watermarks
from projections.rows import account_type, merge_summaries, summarize, unbalanced
from projections.store import META_AS_OF, PartitionSummary, PositionKey, ProjectionStore

LISTED = 10  # at most this many examples per violation


@dataclass(frozen=True)
class Violation:
    check: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "detail": self.detail}


@dataclass
class VerifyReport:
    events: int = 0
    accounts: int = 0
    checksum: str = ""
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "accounts": self.accounts,
                "checksum": self.checksum, "violations": [v.as_dict() for v in self.violations]}

    def add(self, check: str, detail: str) -> None:
        self.violations.append(Violation(check, detail))


@dataclass
class LogFacts:
    """What the journal says, up to the store's positions."""

    summary: dict[PositionKey, PartitionSummary] = field(default_factory=dict)
    unbalanced: list[tuple[str, int]] = field(default_factory=list)
    undecodable: list[tuple[str, int, int]] = field(default_factory=list)
    checksum: str = ""  # of balances folded by the independent reading (crosscheck)
    repeats: list[Finding] = field(default_factory=list)


def verify(settings: Settings, store: ProjectionStore, codec: Codec | None = None) -> VerifyReport:
    codec = codec or Codec()
    report = VerifyReport()
    meta = store.meta()
    as_of = int(meta[META_AS_OF]) if META_AS_OF in meta else None
    positions = store.positions()
    consumer = make_consumer(settings, None)
    try:
        behind = _check_behind(consumer, settings, positions, as_of, report)
        log = _read_log(consumer, settings, positions, as_of, codec)
        store_balances = _check_store(store, log, report)
        _check_crosscheck(settings, log, report)
        _check_dead_letters(settings, log, report)
        if as_of is None and not behind:
            _check_snapshots(consumer, settings, codec, store_balances, report)
    finally:
        consumer.close()
    return report


def _check_behind(consumer: Consumer, settings: Settings, positions: dict[PositionKey, int],
                  as_of: int | None, report: VerifyReport) -> bool:
    topics = [settings.topic("accounts"), settings.topic("events")]
    marks = watermarks(consumer, settings, topics)
    lag = {k: hi - positions.get(k, 0) for k, (_, hi) in marks.items() if positions.get(k, 0) < hi}
    if lag and as_of is None:
        parts = ", ".join(f"{t}[{p}] by {n}" for (t, p), n in sorted(lag.items())[:LISTED])
        report.add("behind", f"the store is behind the log: {parts}; run `ledger project "
                             "--until-caught-up` or `ledger replay` first")
    return bool(lag)


def _read_log(consumer: Consumer, settings: Settings, positions: dict[PositionKey, int],
              as_of: int | None, codec: Codec) -> LogFacts:
    events = settings.topic("events")
    ranges = {k: (0, v) for k, v in positions.items() if k[0] == events}
    facts = LogFacts()
    # The independent reading (fastavro, in worker processes) runs beside this one.
    with CrossReading(settings, ranges, as_of) as background:
        _read_hot(consumer, settings, ranges, as_of, codec, facts)
        cross = background.result(codec)
    if cross.suspect():  # some id's hash repeats: read again to compare the ids themselves
        _confirm(settings, ranges, cross)
    facts.checksum = cross.checksum()
    facts.repeats = cross.findings()
    return facts


def _confirm(settings: Settings, ranges: Ranges, cross: CrossCheck) -> None:
    """The second reading, with a consumer of its own: read_ranges leaves the first
    one's partitions paused, and a paused partition stays paused when assigned again."""
    consumer = make_consumer(settings, None)
    try:
        for msgs in read_ranges(consumer, settings, ranges):
            cross.confirm(msgs)
    finally:
        consumer.close()


def _read_hot(consumer: Consumer, settings: Settings, ranges: Ranges, as_of: int | None,
              codec: Codec, facts: LogFacts) -> None:
    """The journal through the replay's own decoders: summaries, unbalanced, undecodable."""
    ingest = Ingest(settings, codec, as_of=as_of)
    for msgs in read_ranges(consumer, settings, ranges):
        ingest.add(msgs)
        audit = ingest.audit()
        merge_summaries(facts.summary, summarize(audit))
        facts.unbalanced.extend(unbalanced(audit))
        facts.undecodable.extend((b.topic, b.partition, b.offset) for b in ingest.bad)
        ingest.reset()


def _check_store(store: ProjectionStore, log: LogFacts, report: VerifyReport) -> dict[str, int]:
    """Checks inside the store and against the log; returns user and room balances."""
    stored = store.audit_summary()
    report.events = sum(s.events for s in stored.values())
    report.accounts = store.account_count()
    if log.unbalanced:
        report.add("unbalanced", f"{len(log.unbalanced)} events whose postings do not sum to "
                                 f"zero, e.g. {_few(log.unbalanced)}")
    for key in sorted(set(stored) | set(log.summary)):
        s, k = stored.get(key, PartitionSummary()), log.summary.get(key, PartitionSummary())
        if s != k:
            report.add("audit_vs_log", f"{key[0]}[{key[1]}]: store has {_fmt(s)}, "
                                       f"the log has {_fmt(k)}")
    mismatches = store.balance_mismatches(limit=LISTED)
    if mismatches:
        report.add("balance_vs_audit", "balances differ from the sums of audit_log "
                                       f"(account, balance, audit sum): {_few(mismatches)}")
    breaches = store.floor_breaches(limit=LISTED)
    if breaches:
        report.add("floor", f"below the floor (account, balance, floor): {_few(breaches)}")
    users_rooms: dict[str, int] = {}

    def pairs() -> Any:
        for account, balance in store.balance_pairs():
            if account_type(account) != "SYSTEM":
                users_rooms[account] = balance
            yield account, balance

    report.checksum = balance_checksum(pairs())
    return users_rooms


REPEATED = {  # check -> what repeats, and whether to name each holder's event id
    "duplicate_event_id": ("event ids occur in more than one record", False),
    "duplicate_command_id": ("(record key, command id) pairs were decided by more than one "
                             "event", True),
    "double_reversal": ("events were reversed by more than one REVERSED event", True),
}


def _check_crosscheck(settings: Settings, log: LogFacts, report: VerifyReport) -> None:
    """The independent reading's checksum against the store's; ids that must not repeat."""
    if log.checksum != report.checksum:
        report.add("checksum_vs_log", f"the store's balance checksum {report.checksum} differs "
                                      f"from {log.checksum}, the checksum of balances folded "
                                      "from the journal decoded by fastavro's generic reader")
    for finding in log.repeats:
        what, named = REPEATED[finding.check]
        count = f"at least {finding.count}" if finding.at_least else str(finding.count)
        shown = "; ".join(_repeat(r, named) for r in finding.repeats[:LISTED])
        more = "; ..." if len(finding.repeats) > LISTED else ""
        report.add(finding.check, f"{count} {what} in {settings.topic('events')} "
                                  f"([partition]@offset): {shown}{more}")


def _repeat(r: Repeat, named: bool) -> str:
    """`value at [p]@o (event id), [p]@o (event id)`: the value and where its holders are."""
    holders = ", ".join(f"[{p}]@{o}" + (f" ({event_id})" if named else "")
                        for (p, o), event_id in r.holders.values())
    more = f", {r.records} records in all" if r.records > len(r.holders) else ""
    return f"{r.value} at {holders}{more}"


def _check_dead_letters(settings: Settings, log: LogFacts, report: VerifyReport) -> None:
    sources = [settings.topic("events"), settings.topic("accounts")]
    lettered = dead_lettered(settings, sources)
    if lettered:
        report.add("deadletter", f"{len(lettered)} journal records were dead-lettered to "
                                 f"{settings.topic('deadletter')}, e.g. {_few(sorted(lettered))}")
    missing = [c for c in log.undecodable if c not in lettered]
    if missing:
        report.add("undecodable", f"{len(missing)} undecodable journal records not in the "
                                  f"dead-letter topic, e.g. {_few(missing)}")


def _check_snapshots(consumer: Consumer, settings: Settings, codec: Codec,
                     store_balances: dict[str, int], report: VerifyReport) -> None:
    topic = settings.topic("balances")
    latest: dict[str, int] = {}
    bad = 0
    ranges = {k: (lo, hi) for k, (lo, hi) in watermarks(consumer, settings, [topic]).items()}
    for msgs in read_ranges(consumer, settings, ranges):
        for m in msgs:
            if m.error() is not None and check_message_error(settings, m):
                continue
            if m.value() is None:
                latest.pop((m.key() or b"").decode(errors="replace"), None)
                continue
            try:
                rec = codec.decode_as("balance", m.value())
            except CodecError:
                bad += 1
                continue
            if account_type(rec["account"]) != "SYSTEM":
                latest[rec["account"]] = rec["balance"]
    diff = [(a, store_balances.get(a, 0), latest.get(a, 0))
            for a in sorted(set(latest) | set(store_balances))
            if store_balances.get(a, 0) != latest.get(a, 0)]
    if diff:
        report.add("balances_topic", f"{len(diff)} user/room balances differ from {topic} "
                                     f"(account, store, snapshot): {_few(diff)}")
    if bad:
        report.add("balances_topic", f"{bad} undecodable records in {topic}")


def _fmt(s: PartitionSummary) -> str:
    return (f"{s.rows} postings/{s.events} events, sum {s.amount_sum}, "
            f"abs sum {s.amount_abs_sum}, offset sum {s.offset_sum}")


def _few(items: list[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:LISTED])
    return shown + (", ..." if len(items) > LISTED else "")
