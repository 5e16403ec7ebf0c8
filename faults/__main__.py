"""python -m faults: a seeded crash schedule over a command workload (see faults/runner.py),
or one of the history scenarios: `python -m faults zombie|storm|coordinator --help`; `python
-m faults check` checks a scenario's saved history against its topics again."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faults.runner import FaultConfig, run, write_report

SCENARIOS = ("zombie", "storm", "coordinator")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in SCENARIOS:
        scenario(sys.argv[1], sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "check":
        recheck(sys.argv[2:])
        return
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


def scenario(name: str, argv: list[str]) -> None:
    """One history scenario at its full size unless told otherwise; report.json in --workdir;
    exit 0 when the history checks out, 1 when it does not."""
    from faults.harness import ScenarioReport

    p = argparse.ArgumentParser(prog=f"python -m faults {name}", description=_doc(name))
    if name != "coordinator":
        p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers.")
    else:
        p.add_argument("--kills", type=int, default=20, help="Coordinator kills.")
        p.add_argument("--base-port", type=int, default=14092,
                       help="First broker port tried for the private 3-broker cluster.")
    p.add_argument("--seed", type=int, default=1, help="Seed of the workload and schedule.")
    p.add_argument("--commands", type=int, default=None, help="Commands to send (at most).")
    p.add_argument("--workdir", type=Path, default=Path(f"faults-out/{name}"),
                   help="Instance logs, state and report.json go here.")
    a = p.parse_args(argv)
    extra = {"commands": a.commands} if a.commands else {}
    report: ScenarioReport
    if name == "zombie":
        from faults.zombie import ZombieConfig, run_zombie

        report = run_zombie(ZombieConfig(bootstrap=a.bootstrap, workdir=a.workdir, seed=a.seed,
                                         **extra))
    elif name == "storm":
        from faults.storm import StormConfig, run_storm

        report = run_storm(StormConfig(bootstrap=a.bootstrap, workdir=a.workdir, seed=a.seed,
                                       **extra))
    else:
        from faults.coordinator import CoordinatorConfig, run_coordinator

        report = run_coordinator(CoordinatorConfig(workdir=a.workdir, seed=a.seed,
                                                   kills=a.kills, base_port=a.base_port,
                                                   **extra))
    report.write(a.workdir / "report.json")
    print(report.summary())
    sys.exit(0 if report.ok else 1)


def recheck(argv: list[str]) -> None:
    """Check a scenario's saved history (history.jsonl) against its topics again."""
    from faults.checker import check_log
    from faults.history import History
    from ledger.settings import Settings

    p = argparse.ArgumentParser(prog="python -m faults check", description=recheck.__doc__)
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers.")
    p.add_argument("--prefix", required=True, help="The scenario's topic prefix.")
    p.add_argument("--history", type=Path, required=True, help="Its history.jsonl.")
    a = p.parse_args(argv)
    settings = Settings(bootstrap=a.bootstrap, topic_prefix=a.prefix)
    report = check_log(History.load(a.history), settings)
    print(report.summary())
    sys.exit(0 if report.valid else 1)


def _doc(name: str) -> str:
    module = __import__(f"faults.{name}", fromlist=["__doc__"])
    return (module.__doc__ or "").strip().splitlines()[0]


if __name__ == "__main__":
    main()
