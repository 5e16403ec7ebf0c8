"""The report: one number per figure, ratios, targets met or not, as JSON and markdown."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RAW = "raw_consume"
BASELINE = "seed_baseline"

# Every figure a complete run reports, in table order (the smoke test checks them all).
FIGURES: dict[str, tuple[str, str, str]] = {  # key -> (label, unit, kind)
    RAW: ("Raw consume, confluent-kafka, ledger consumer settings, no decoding",
          "events/s", "rate"),
    "raw_consume_tuned": ("Raw consume, confluent-kafka, librdkafka's fetch-queue defaults",
                          "events/s", "rate"),
    "kafka_consumer_perf": ("Kafka ConsumerPerformance (Java, fetch rate)", "events/s", "rate"),
    BASELINE: ("Seed-style projector: ORM, one commit per record (sample)", "events/s",
               "rate"),
    "replay_duckdb": ("ledger replay into DuckDB (--out)", "events/s", "rate"),
    "replay_postgres": ("ledger replay into Postgres", "events/s", "rate"),
    "replay_duckdb_peak_rss": ("ledger replay into DuckDB: peak RSS (process tree)", "MB",
                               "memory"),
    "replay_postgres_peak_rss": ("ledger replay into Postgres: peak RSS (process tree)", "MB",
                                 "memory"),
    "processor": ("Processor (ledger serve, exactly-once), validated commands", "commands/s",
                  "rate"),
    "latency_p50": ("Submit-to-outcome latency p50", "ms", "latency"),
    "latency_p99": ("Submit-to-outcome latency p99", "ms", "latency"),
}


@dataclass
class Figure:
    key: str
    value: float | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def label(self) -> str:
        return FIGURES[self.key][0]

    @property
    def unit(self) -> str:
        return FIGURES[self.key][1]

    @property
    def kind(self) -> str:
        return FIGURES[self.key][2]


@dataclass
class Target:
    name: str
    figure: str
    threshold: float
    measured: float | None
    met: bool | None  # None: could not be measured
    note: str = ""


@dataclass
class Report:
    config: dict[str, Any]
    machine: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)

    def set(self, key: str, value: float, note: str = "", **details: Any) -> None:
        self.figures[key] = Figure(key, float(value), note, details)

    def fail(self, key: str, error: str) -> None:
        self.figures[key] = Figure(key, error=error)

    def value(self, key: str) -> float | None:
        f = self.figures.get(key)
        return f.value if f is not None else None

    def ratio(self, key: str, to: str) -> float | None:
        v, base = self.value(key), self.value(to)
        if v is None or not base or FIGURES[key][2] != "rate":
            return None
        return v / base

    def targets(self) -> list[Target]:
        d, pg = self.value("replay_duckdb"), self.value("replay_postgres")
        raw_ratio = self.ratio("replay_duckdb", RAW)
        base_ratio = self.ratio("replay_duckdb", BASELINE)
        proc = self.value("processor")
        p99 = self.value("latency_p99")
        rate = self.config.get("latency_rate", 0)
        events = self.config.get("events", 0)
        mems = [m for m in (self.value("replay_duckdb_peak_rss"),
                            self.value("replay_postgres_peak_rss")) if m is not None]
        growth = [self.figures[k].details.get("growth_mb", 0.0)
                  for k in ("replay_duckdb_peak_rss", "replay_postgres_peak_rss")
                  if k in self.figures and self.figures[k].value is not None]
        peak = max(mems) if mems else None
        flat = bool(growth) and max(growth) <= 0.1 * (peak or 0)
        size_note = ("" if events >= 10_000_000 else
                     f"measured at {events:,} events; the target is stated for 10M (--large)")
        return [
            _at_least("replay into DuckDB >= 250,000 events/s", "replay_duckdb", 250_000, d),
            _at_least("replay into DuckDB >= 0.5 x raw consume", "replay_duckdb", 0.5,
                      raw_ratio),
            _at_least("replay into Postgres >= 100,000 events/s", "replay_postgres", 100_000,
                      pg),
            _at_least("replay into DuckDB >= 300 x seed-style baseline", "replay_duckdb", 300,
                      base_ratio),
            _at_least("processor >= 20,000 commands/s", "processor", 20_000, proc),
            Target(f"p99 < 100 ms at {rate:,.0f} commands/s offered", "latency_p99", 100, p99,
                   None if p99 is None else p99 < 100,
                   "" if rate == 2000 else "offered load differs from the target's 2,000/s"),
            Target("replay memory <= 300 MB and flat in the event count",
                   "replay_duckdb_peak_rss", 300, peak,
                   None if peak is None else (peak <= 300 and flat),
                   "; ".join(x for x in (
                       f"growth from mid-run to the end: {max(growth):+.0f} MB "
                       "(flat: at most 10% of the peak)" if growth else "", size_note) if x)),
        ]

    def ok(self) -> bool:
        """Every figure measured (none skipped, none failed)."""
        return set(FIGURES) <= set(self.figures) and all(
            f.error is None and f.value is not None for f in self.figures.values())

    def as_json(self) -> dict[str, Any]:
        figures = {}
        for key, f in self.figures.items():
            figures[key] = {"label": f.label, "value": f.value, "unit": f.unit, "kind": f.kind,
                            "ratio_to_raw_consume": self.ratio(key, RAW),
                            "ratio_to_baseline": self.ratio(key, BASELINE),
                            "note": f.note, "details": f.details, "error": f.error}
        return {"ok": self.ok(), "machine": self.machine, "config": self.config,
                "figures": figures, "targets": [asdict(t) for t in self.targets()],
                "phases": self.phases}

    def write(self, out: Path) -> dict[str, Path]:
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "report.json", "markdown": out / "report.md"}
        paths["json"].write_text(json.dumps(self.as_json(), indent=2) + "\n")
        paths["markdown"].write_text(self.markdown())
        return paths

    def markdown(self) -> str:
        m = self.machine
        lines = [
            f"# Benchmark: {self.config.get('events', 0):,} journal events",
            "",
            f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('ram_gb')} GB RAM; "
            f"{m.get('os')}; Python {m.get('python')}; confluent-kafka "
            f"{m.get('confluent_kafka')} (librdkafka {m.get('librdkafka')}); Kafka "
            f"{m.get('kafka')} (1 local broker, {m.get('java')}); DuckDB {m.get('duckdb')}; "
            f"PostgreSQL {m.get('postgres')}. Load average at start: {m.get('load_at_start')}."
            + (f" Extra Kafka client properties: {self.config['kafka_config']}."
               if self.config.get("kafka_config") else ""),
            "",
            "| Figure | Value | x raw consume | x baseline | Notes |",
            "|---|---:|---:|---:|---|",
        ]
        for key in FIGURES:
            f = self.figures.get(key)
            if f is None:
                continue
            value = f"error: {f.error}" if f.error else _fmt(f.value, f.unit)
            lines.append(f"| {f.label} | {value} | {_ratio(self.ratio(key, RAW))} | "
                         f"{_ratio(self.ratio(key, BASELINE))} | {f.note} |")
        lines += ["", "| Target | Measured | Status | Notes |", "|---|---:|---|---|"]
        for t in self.targets():
            status = "not measured" if t.met is None else ("met" if t.met else "NOT MET")
            unit = FIGURES[t.figure][1] if t.threshold > 1000 or "MB" in t.name else ""
            measured = _fmt(t.measured, unit) if "x " not in t.name else _ratio(t.measured)
            if "p99" in t.name:
                measured = _fmt(t.measured, "ms")
            lines.append(f"| {t.name} | {measured} | {status} | {t.note} |")
        lines += ["", "Phases (seconds; 1-minute load average at start -> end; CPU in use by "
                  "others just before): " + ", ".join(_phase(p) for p in self.phases), ""]
        return "\n".join(lines)


def _phase(p: dict[str, Any]) -> str:
    load = p.get("load") or ["?"]
    after = p.get("load_after") or ["?"]
    busy = p.get("cpu_busy_before_pct")
    return (f"{p['name']} {p['seconds']:.1f}s (load {load[0]} -> {after[0]}"
            + (f", others {busy:.0f}%" if busy is not None else "") + ")")


def _at_least(name: str, figure: str, threshold: float, measured: float | None) -> Target:
    return Target(name, figure, threshold, measured,
                  None if measured is None else measured >= threshold)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("ms", "MB"):
        return f"{value:,.1f} {unit}"
    return f"{value:,.0f} {unit}".strip()


def _ratio(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:,.0f}x" if r >= 100 else f"{r:.2f}x"
