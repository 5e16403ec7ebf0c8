"""The history checker's options and its report: counts, and violations by check."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class CheckOptions:
    max_amount: int = 1_000_000_000  # the ledger's limit (Settings.max_amount)
    reasons: bool = True  # hold every rejection's reason against the history
    # A join's room opened on another instance reaches the decider through the global
    # accounts table: a room whose open was accepted less than this long before the join
    # was invoked may honestly still be unknown there.
    room_visibility_s: float = 5.0
    examples: int = 20  # violations kept per check (the counts are always complete)


@dataclass(frozen=True)
class Violation:
    check: str
    command_id: str | None
    account: str | None
    detail: str

    def __str__(self) -> str:
        who = " ".join(x for x in (self.account, self.command_id) if x)
        return f"[{self.check}] {who}: {self.detail}" if who else f"[{self.check}] {self.detail}"


@dataclass
class HistoryReport:
    ops: int = 0
    ok: int = 0
    failed: int = 0
    unknown: int = 0
    in_flight: int = 0  # never completed: counted as unknown
    journal_events: int = 0
    snapshots: int = 0
    lost: int = 0  # ok commands with no journal event
    duplicated: int = 0  # journal events beyond the first of one command
    unknown_applied: int = 0
    unknown_not_applied: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # rejections by reason
    counts: Counter[str] = field(default_factory=Counter)  # violations by check
    violations: list[Violation] = field(default_factory=list)  # the first `examples` per check

    @property
    def valid(self) -> bool:
        return not self.counts

    def add(self, check: str, command_id: str | None, account: str | None, detail: str,
            keep: int) -> None:
        self.counts[check] += 1
        if self.counts[check] <= keep:
            self.violations.append(Violation(check, command_id, account, detail))

    def first(self, n: int = 5) -> list[str]:
        return [str(v) for v in self.violations[:n]]

    def summary(self) -> str:
        head = (
            f"{self.ops} ops: {self.ok} ok, {self.failed} failed, {self.unknown} unknown "
            f"({self.unknown_applied} applied, {self.unknown_not_applied} not); "
            f"{self.journal_events} journal events, {self.snapshots} snapshots; "
            f"lost {self.lost}, duplicated {self.duplicated}"
        )
        if self.valid:
            return head + "; valid"
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        lines = [head + f"; INVALID: {counts}"]
        lines += [f"  {v}" for v in self.violations[:40]]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # asdict rebuilds a Counter from its (key, value) pairs, counting the pairs.
        out["reasons"], out["counts"] = dict(self.reasons), dict(self.counts)
        out["valid"] = self.valid
        out["violations"] = [str(v) for v in self.violations]
        return out


