"""A process that holds a DuckDB store open for writing, as a projector does, without Kafka.

`python -m tests.unit.store_holder STORE STOP [--answer]`: opens STORE, writes READY
beside STOP, and with --answer takes the snapshots asked of it (projections.
snapshot_requests.Snapshotter, as the projector does between batches) until the file
STOP appears.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from projections.factory import open_store
from projections.snapshot_requests import projector_snapshotter


def main(argv: list[str]) -> int:
    url, stop = f"duckdb:///{argv[0]}", Path(argv[1])
    with open_store(url) as store:
        snapshots = projector_snapshotter(url, store, out=None, every_s=None)
        assert snapshots is not None
        stop.with_name("READY").touch()
        while not stop.exists():
            if "--answer" in argv:
                snapshots.tick()
            time.sleep(0.05)
        snapshots.close(cancel=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
