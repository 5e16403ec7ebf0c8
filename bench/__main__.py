"""`python -m bench`: measure the ledger side by side in one run; see bench/__init__.py."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bench.runner import PHASES, Bench, Options
from bench.stack import target
from ledger.settings import default_home

LARGE = 10_000_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the points ledger: raw Kafka consume, Kafka's perf tool, a "
                    "seed-style baseline, ledger replay into DuckDB and Postgres, and the "
                    "processor's throughput and latency, over one generated journal. Writes "
                    "report.json, report.md and report.png to --out.")
    p.add_argument("--events", type=int, default=1_000_000,
                   help="Journal events to generate and replay (default: %(default)s).")
    p.add_argument("--large", action="store_true",
                   help=f"The large run: {LARGE:,} events (overrides --events).")
    p.add_argument("--out", type=Path, default=Path("bench/out"),
                   help="Directory for the report, chart and logs (default: %(default)s).")
    p.add_argument("--bootstrap", default=None,
                   help="Kafka bootstrap servers to use; if absent, a dev stack is started on "
                        "free ports and stopped at the end.")
    p.add_argument("--postgres-url", default=None,
                   help="Postgres URL (postgresql+psycopg://...) to use; if absent, the dev "
                        "stack's Postgres is started. The bench works in fresh schemas and "
                        "drops them.")
    p.add_argument("--kafka-config", type=Path, default=None, metavar="FILE",
                   help="Extra Kafka client properties (key=value lines) for every client of "
                        "the run: the bench's own and `ledger serve`/`ledger replay` (passed as "
                        "--kafka-config); e.g. retry.backoff.ms=10 to try a tuning.")
    p.add_argument("--partitions", type=int, default=6,
                   help="Partitions of the bench topics (default: %(default)s).")
    p.add_argument("--baseline-sample", type=int, default=5_000,
                   help="Records the slow seed-style projector handles (default: %(default)s).")
    p.add_argument("--commands", type=int, default=200_000,
                   help="Commands pre-filled for the processor's throughput "
                        "(default: %(default)s).")
    p.add_argument("--warmup-commands", type=int, default=50_000,
                   help="Commands of a warm-up round on its own topics before the measured "
                        "processor round: a fresh broker's JIT compiles its transaction paths "
                        "during its first minute of them; 0 measures cold "
                        "(default: %(default)s).")
    p.add_argument("--warmup-seconds", type=float, default=60,
                   help="How long the warm-up round then offers --latency-rate "
                        "(default: %(default)s).")
    p.add_argument("--accounts", type=int, default=10_000,
                   help="Accounts pre-opened for the processor phases (default: %(default)s).")
    p.add_argument("--latency-rate", type=float, default=2_000,
                   help="Offered load of the latency phase, commands/s (default: %(default)s).")
    p.add_argument("--latency-seconds", type=float, default=15,
                   help="Duration of the latency phase (default: %(default)s).")
    p.add_argument("--max-batch", type=int, default=2000,
                   help="`ledger serve --max-batch` for the processor (default: %(default)s).")
    p.add_argument("--jars-dir", type=Path, default=default_home() / "kafka-4.1.1" / "lib",
                   help="Kafka jars for ConsumerPerformance (default: %(default)s).")
    p.add_argument("--home", type=Path, default=None,
                   help="Where a bench dev stack lives, as <home>/bench-stack "
                        "(default: the ledger home, ~/.cache/points-ledger).")
    p.add_argument("--seed", type=int, default=42,
                   help="Seed of the generated journal and commands (default: %(default)s).")
    p.add_argument("--skip", action="append", choices=PHASES, default=[],
                   help="Leave out a phase (repeatable); its figures are missing from the "
                        "report and the run counts as incomplete.")
    p.add_argument("--quiet-wait", type=float, default=120,
                   help="Before each phase, wait up to this many seconds for the machine's CPU "
                        "use to fall below --quiet-cpu (other work skews the figures); 0 never "
                        "waits (default: %(default)s).")
    p.add_argument("--quiet-cpu", type=float, default=40,
                   help="CPU use in %% (all cores) under which the machine counts as quiet "
                        "(default: %(default)s).")
    p.add_argument("--keep", action="store_true",
                   help="Keep the DuckDB file and, on a given broker, the bench topics.")
    p.add_argument("-q", "--quiet", action="store_true", help="Only warnings and the summary.")
    args = p.parse_args(argv)
    if args.large:
        args.events = LARGE
    for name in ("events", "partitions", "baseline_sample", "commands", "accounts",
                 "max_batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup_commands < 0 or (args.warmup_commands and args.warmup_seconds <= 0):
        p.error("--warmup-commands must be at least 0, --warmup-seconds positive")
    if args.latency_rate <= 0 or args.latency_seconds <= 0:
        p.error("--latency-rate and --latency-seconds must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s [%(name)s] %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("ledger.kafka").setLevel(logging.ERROR)  # librdkafka's retry chatter
    opts = Options(
        events=args.events, out=args.out.resolve(), partitions=args.partitions,
        baseline_sample=args.baseline_sample, commands=args.commands, accounts=args.accounts,
        latency_rate=args.latency_rate, latency_seconds=args.latency_seconds,
        max_batch=args.max_batch, jars=args.jars_dir, seed=args.seed,
        skip=frozenset(args.skip), keep=args.keep, quiet_wait=args.quiet_wait,
        quiet_cpu=args.quiet_cpu, warmup_commands=args.warmup_commands,
        warmup_seconds=args.warmup_seconds,
        kafka_config=args.kafka_config.resolve() if args.kafka_config else None)
    with target(args.bootstrap, args.postgres_url, args.home) as where:
        report = Bench(opts, where).run()
    print(report.markdown())
    return 0 if report.ok() and not opts.skip else 1


if __name__ == "__main__":
    sys.exit(main())
