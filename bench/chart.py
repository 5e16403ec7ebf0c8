"""A PNG of the report's figures, for people who would rather look than read."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from bench.report import FIGURES, Report

SHORT = {
    "raw_consume": "raw consume\n(ledger settings)",
    "raw_consume_tuned": "raw consume\n(librdkafka defaults)",
    "kafka_consumer_perf": "Kafka perf tool",
    "seed_baseline": "seed-style ORM\n(baseline)",
    "replay_duckdb": "replay -> DuckDB",
    "replay_postgres": "replay -> Postgres",
    "processor": "processor\n(commands/s)",
}
TARGET_LINES = {"replay_duckdb": 250_000, "replay_postgres": 100_000, "processor": 20_000}


def draw(report: Report, path: Path) -> Path:
    rates = [(k, v) for k in FIGURES if FIGURES[k][2] == "rate" and (v := report.value(k))]
    fig, (ax_rate, ax_lat, ax_mem) = plt.subplots(
        1, 3, figsize=(15, 5.5), gridspec_kw={"width_ratios": [3, 1.2, 1.2]})
    events = report.config.get("events", 0)
    fig.suptitle(f"points ledger benchmark: {events:,} events, "
                 f"{report.machine.get('cores')} cores ({report.machine.get('cpu')})")

    names = [SHORT.get(k, k) for k, _ in rates][::-1]
    values = [v for _, v in rates][::-1]
    colors = ["#4c72b0" if k.startswith(("raw", "kafka")) else
              "#c44e52" if k == "seed_baseline" else "#55a868" for k, _ in rates][::-1]
    bars = ax_rate.barh(names, values, color=colors)
    ax_rate.set_xscale("log")
    ax_rate.set_xlabel("records per second (log scale); black ticks: targets")
    ax_rate.set_title("throughput")
    for bar, (key, value) in zip(bars, rates[::-1], strict=True):
        base = report.ratio(key, "seed_baseline")
        extra = f"  ({base:,.0f}x baseline)" if base and key != "seed_baseline" else ""
        at = max(value, TARGET_LINES.get(key, 0) * 1.08)  # never under a target tick
        ax_rate.text(at, bar.get_y() + bar.get_height() / 2, f" {value:,.0f}{extra}",
                     va="center", fontsize=8)
    for key, target in TARGET_LINES.items():
        if key in dict(rates):
            y = names.index(SHORT[key])
            ax_rate.plot([target, target], [y - 0.4, y + 0.4], color="black", lw=2)
    ax_rate.set_xlim(right=max(values) * 20 if values else 10)

    lat = report.figures.get("latency_p50"), report.figures.get("latency_p99")
    details = lat[1].details if lat[1] is not None else {}
    lat_values = [(n, v) for n, v in (
        ("p50", report.value("latency_p50")), ("p90", details.get("p90_ms")),
        ("p99", report.value("latency_p99")), ("max", details.get("max_ms"))) if v is not None]
    ax_lat.bar([n for n, _ in lat_values], [v for _, v in lat_values], color="#8172b2")
    ax_lat.axhline(100, color="black", ls="--", lw=1, label="p99 target 100 ms")
    ax_lat.set_ylabel("ms")
    ax_lat.set_title(f"submit-to-outcome latency\nat {report.config.get('latency_rate', 0):,.0f}"
                     " commands/s offered")
    ax_lat.legend(fontsize=8)

    mem = [(n, v) for n, v in (("DuckDB", report.value("replay_duckdb_peak_rss")),
                                ("Postgres", report.value("replay_postgres_peak_rss")))
           if v is not None]
    ax_mem.bar([n for n, _ in mem], [v for _, v in mem], color="#ccb974")
    ax_mem.axhline(300, color="black", ls="--", lw=1, label="target 300 MB")
    ax_mem.set_ylabel("MB")
    ax_mem.set_title("replay peak resident memory")
    ax_mem.legend(fontsize=8)

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
