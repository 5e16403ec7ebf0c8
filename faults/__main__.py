"""python -m faults: a seeded crash schedule over a command workload (see faults/runner.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faults.runner import FaultConfig, run, write_report


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m faults", description=__doc__)
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers.")
    p.add_argument(
        "--store", default=None, help="Projection store URL (default: a DuckDB file in --workdir)."
    )
    p.add_argument("--seed", type=int, default=1, help="Seed of the workload and schedule.")
    p.add_argument("--commands", type=int, default=1_000_000, help="Commands to send.")
    p.add_argument("--kills", type=int, default=50, help="SIGKILLs in the schedule.")
    p.add_argument("--partitions", type=int, default=6, help="Partitions per topic.")
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("faults-out"),
        help="Logs, the DuckDB store and report.json go here.",
    )
    a = p.parse_args()
    store = a.store or f"duckdb:///{(a.workdir / 'faults.duckdb').resolve()}"
    cfg = FaultConfig(
        bootstrap=a.bootstrap,
        store=store,
        workdir=a.workdir,
        seed=a.seed,
        commands=a.commands,
        kills=a.kills,
        partitions=a.partitions,
    )
    report = run(cfg)
    write_report(report, a.workdir / "report.json")
    print(
        f"seed {report.seed}: sent {report.commands_sent}, accepted {report.accepted}, "
        f"rejected {report.rejected}, kills {report.processor_kills} processor + "
        f"{report.projector_kills} projector, lost {report.lost}, duplicated "
        f"{report.duplicated}, problems {report.problems or 'none'}, {report.seconds:.0f}s"
    )
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
