"""`python -m bench.profile`: cProfile of `ledger replay` over a generated journal.

The replay may decode in worker processes and write on a thread, neither of which
cProfile sees; by default both are folded into the main thread (the settings'
Tuning.replay_max_workers 0 and replay_writer_thread off), so the profile
attributes every event's CPU time: read, decode, Arrow, balances, store. Stages then
run one after another: the profiled wall time is the sum of the stages' CPU.
Writes replay.prof (for pstats/snakeviz) and replay-profile.txt to --out.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

from bench import journal
from bench.stack import target
from ledger.settings import Settings
from ledger.topics import create_topics

LOG = logging.getLogger("bench")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.profile",
                                description="Profile `ledger replay` with cProfile.")
    p.add_argument("--events", type=int, default=200_000,
                   help="Events to generate when --topic-prefix is not given "
                        "(default: %(default)s).")
    p.add_argument("--topic-prefix", default=None,
                   help="Profile the replay of this existing journal instead of generating one.")
    p.add_argument("--bootstrap", default=None,
                   help="Kafka bootstrap servers; if absent, a dev stack is started and stopped.")
    p.add_argument("--store", default=None,
                   help="Store URL to replay into (default: a DuckDB file in --out).")
    p.add_argument("--out", type=Path, default=Path("bench/out"),
                   help="Directory for replay.prof and replay-profile.txt "
                        "(default: %(default)s).")
    p.add_argument("--top", type=int, default=30,
                   help="Functions listed per ordering (default: %(default)s).")
    p.add_argument("--parallel", action="store_true",
                   help="Keep the replay's decoder processes and writer thread (profiles the "
                        "main thread only).")
    return p.parse_args(argv)


def profile_replay(settings: Settings, store: str, inline: bool) -> cProfile.Profile:
    """cProfile of the task behind `ledger replay`, with the entry point's process switches.
    `inline`: Tuning.replay_max_workers 0 and replay_writer_thread off, so that every stage
    runs on this thread, where cProfile sees it."""
    from cli.process import bulk_read_settings
    from projections.tasks import reach_journal, replay_into

    if inline:
        settings = settings.with_(tuning=replace(settings.tuning, replay_max_workers=0,
                                                 replay_writer_thread=False))
    settings = settings.with_(store=store)
    reach_journal(settings)
    prof = cProfile.Profile()
    with bulk_read_settings():
        prof.enable()
        try:
            replay_into(settings, None, as_of_ms=None, progress=None, reset=False)
        finally:
            prof.disable()
    return prof


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(name)s] %(message)s",
                        datefmt="%H:%M:%S")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with target(args.bootstrap, None, need_postgres=bool(args.store and "postgres" in args.store)
                ) as where:
        settings = Settings(bootstrap=where.bootstrap,
                            topic_prefix=args.topic_prefix or f"prof-{uuid.uuid4().hex[:8]}")
        if args.topic_prefix is None:
            create_topics(settings)
            gen = journal.write_journal(settings, journal.Shape.for_events(args.events))
            LOG.info("generated %d events in %.1fs", gen.events, gen.seconds)
        db = out / "profile.duckdb"
        for stale in (db, db.with_name(db.name + ".wal")):
            stale.unlink(missing_ok=True)
        started = time.monotonic()
        prof = profile_replay(settings, args.store or f"duckdb:///{db}", not args.parallel)
        LOG.info("profiled replay took %.1fs (with cProfile's overhead)",
                 time.monotonic() - started)
    prof.dump_stats(out / "replay.prof")
    text = io.StringIO()
    for order in ("tottime", "cumulative"):
        text.write(f"\n=== ordered by {order} ===\n")
        pstats.Stats(prof, stream=text).sort_stats(order).print_stats(args.top)
    (out / "replay-profile.txt").write_text(text.getvalue())
    print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
