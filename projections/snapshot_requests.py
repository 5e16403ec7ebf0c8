"""Snapshots of a store whose projector is running: taken by the projector itself.

DuckDB lets one process open a file for writing and then no other process open it at
all, so `ledger snapshot` cannot read a DuckDB store while its projector runs. The
projector takes snapshots instead, on a thread of its own beside its loop (a read
transaction of its own database instance: the projector keeps writing meanwhile):
- every --snapshot-every, into --snapshot-out;
- on request: `ledger snapshot` drops a request file into `<store>.snapshot-requests/`
  (written whole, then renamed into place), the projector claims it by renaming it
  (`.request.json` -> `.taken.json`), and answers with `<id>.result.json`. The command
  waits for that answer; if no projector claims the request and the store becomes
  readable (the projector stopped), it withdraws the request and reads the file itself.
A Postgres store needs none of this (any process may read it in its own transaction);
its projector still takes the periodic snapshots.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import LedgerError, StoreError
from ledger.settings import Tuning
from projections.factory import store_kind
from projections.snapshot import SnapshotResult, check_out, write_snapshot
from projections.snapshot_copy import Copied, copy_idle, copy_if_full, copy_live, finish_copy
from projections.snapshot_source import DuckDBReader, StoreLocked, StoreReader, open_reader
from projections.store import META_STORE_ID

LOG = logging.getLogger("ledger.snapshot")
REQUESTS = ".snapshot-requests"
DEFAULT_TUNING = Tuning()  # snapshot_poll_s, snapshot_claim_s, snapshot_wait_s


Copier = Callable[[Path, bool], Copied | None]  # (out, full) -> a copy of the store's file


def requests_dir(store_path: str) -> Path:
    return Path(store_path + REQUESTS)


@dataclass(frozen=True)
class Request:
    id: str
    out: str
    full: bool


def _write_json(path: Path, value: object) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def submit(store_path: str, out: Path, full: bool) -> str:
    folder = requests_dir(store_path)
    folder.mkdir(exist_ok=True)
    rid = f"{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}"
    _write_json(folder / f"{rid}.request.json",
                {"id": rid, "out": str(out), "full": full, "pid": os.getpid()})
    return rid


def claim_next(folder: Path) -> Request | None:
    """The oldest request, claimed (renamed) by this process; None if there is none."""
    with suppress(FileNotFoundError):
        for path in sorted(folder.glob("*.request.json")):
            taken = path.with_name(path.name.replace(".request.", ".taken."))
            try:
                os.rename(path, taken)  # only one process wins a rename of one file
                raw = json.loads(taken.read_text())
            except FileNotFoundError:
                continue  # withdrawn or claimed by another
            except (OSError, ValueError) as e:
                LOG.warning("snapshot request %s unreadable: %s", path, e)
                continue
            return Request(str(raw["id"]), str(raw["out"]), bool(raw.get("full")))
    return None


def answer(folder: Path, rid: str, value: dict[str, object]) -> None:
    _write_json(folder / f"{rid}.result.json", value)
    (folder / f"{rid}.taken.json").unlink(missing_ok=True)


class Snapshotter:
    """The projector's snapshots: on a schedule and on request, one at a time, each on a
    thread of its own. tick() runs on the projector's thread between batches."""

    def __init__(self, open_reader: Callable[[], StoreReader], *, out: Path | None = None,
                 every_s: float | None = None, requests: Path | None = None,
                 threads: int | None = 1, copier: Copier | None = None,
                 source_url: str = "", tuning: Tuning = DEFAULT_TUNING) -> None:
        self._open_reader = open_reader
        self._copier = copier  # a DuckDB store's full snapshots: a copy of its file
        self.source_url = source_url
        self.poll_s = tuning.snapshot_poll_s
        self.out = out
        self.every_s = every_s
        self.requests = requests
        self.threads = threads
        self.taken = 0  # snapshots written
        self.failed = 0
        self._due = time.monotonic() + every_s if every_s else float("inf")
        self._next_poll = 0.0
        self._thread: threading.Thread | None = None
        self._reader: StoreReader | None = None

    def tick(self) -> None:
        if self._thread is not None:
            if self._thread.is_alive():
                return
            self._thread = None
        now = time.monotonic()
        if self.requests is not None and now >= self._next_poll:
            self._next_poll = now + self.poll_s
            request = claim_next(self.requests)
            if request is not None:
                self._start(Path(request.out), request.full, request.id)
                return
        if self.out is not None and now >= self._due:
            assert self.every_s is not None
            self._due = now + self.every_s
            self._start(self.out, False, None)

    def _start(self, out: Path, full: bool, rid: str | None) -> None:
        try:  # here, between batches: the moment the snapshot reflects
            copied = self._copier(out, full) if self._copier is not None else None
            if copied is not None:
                self._reader = None
                self._thread = threading.Thread(target=self._run_copy, args=(copied, out, rid),
                                                name="snapshot", daemon=True)
                self._thread.start()
                return
            reader = self._open_reader()
        except (LedgerError, OSError) as e:
            self._done(rid, None, e)
            return
        self._reader = reader
        self._thread = threading.Thread(target=self._run, args=(reader, out, full, rid),
                                        name="snapshot", daemon=True)
        self._thread.start()

    def _run_copy(self, copied: Copied, out: Path, rid: str | None) -> None:
        try:
            result = finish_copy(copied, out, self.source_url, self.threads)
        except Exception as e:
            self._done(rid, None, e)
        else:
            self._done(rid, result, None)

    def _run(self, reader: StoreReader, out: Path, full: bool, rid: str | None) -> None:
        try:
            result = write_snapshot(reader, out, full=full, threads=self.threads)
        except Exception as e:
            self._done(rid, None, e)
        else:
            self._done(rid, result, None)
        finally:
            with suppress(Exception):
                reader.close()

    def _done(self, rid: str | None, result: SnapshotResult | None,
              error: BaseException | None) -> None:
        if error is None and result is not None:
            self.taken += 1
            LOG.info("snapshot %s: %s, %d audit rows (%d added) in %.1fs", result.out,
                     result.mode, result.audit_rows, result.rows_added, result.seconds)
        else:
            self.failed += 1
            LOG.warning("snapshot failed: %s", error)
        if rid is not None and self.requests is not None:
            answer(self.requests, rid, {"ok": True, "result": result.as_json()}
                   if result is not None else {"ok": False, "error": str(error)})

    def close(self, cancel: bool = True) -> None:
        """Wait for a snapshot in progress, stopped first if cancel (its temporary file is
        removed; a request it answers gets the error)."""
        thread, reader = self._thread, self._reader
        if thread is not None and thread.is_alive():
            if cancel and reader is not None:
                with suppress(Exception):
                    reader.interrupt()
            thread.join()


def projector_snapshotter(store_url: str, store: object, *, out: Path | None,
                          every_s: float | None,
                          tuning: Tuning = DEFAULT_TUNING) -> Snapshotter | None:
    """The Snapshotter a projector of store_url runs: DuckDB stores always answer
    requests; any store takes periodic snapshots when asked to."""
    if store_kind(store_url) == "duckdb":
        from projections.duckdb_store import DuckDBProjectionStore

        assert isinstance(store, DuckDBProjectionStore)

        def copier(to: Path, full: bool) -> Copied | None:
            return copy_if_full(to, full, store.store_id(), store.positions(),
                                lambda o: copy_live(store.connection, store.path, o))

        return Snapshotter(lambda: DuckDBReader.of_projector(store, tuning.snapshot_batch_rows),
                           out=out, every_s=every_s,
                           requests=requests_dir(store.path), copier=copier,
                           source_url=store.url, tuning=tuning)
    if out is None:
        return None
    return Snapshotter(lambda: open_reader(store_url, tuning.snapshot_batch_rows), out=out,
                       every_s=every_s, tuning=tuning)


# -- the command's side ---------------------------------------------------------------------

def take_snapshot(url: str, out: Path, *, full: bool = False, timeout_s: float | None = None,
                  tuning: Tuning = DEFAULT_TUNING) -> SnapshotResult:
    """A snapshot of the store at url into out: read here, or by its running projector
    (waiting `timeout_s`, by default tuning.snapshot_wait_s)."""
    store_path = None
    if store_kind(url) == "duckdb":
        from projections.duckdb_store import duckdb_path

        store_path = duckdb_path(url)
    out = check_out(out, store_path)
    try:
        reader = open_reader(url, tuning.snapshot_batch_rows)
    except StoreLocked:
        assert store_path is not None
        got = ask_projector(store_path, out, full,
                            tuning.snapshot_wait_s if timeout_s is None else timeout_s, tuning)
        if isinstance(got, SnapshotResult):
            return got
        reader = got
    with reader:
        if store_path is not None:  # nobody writes the file while this reader holds it
            path = store_path
            copied = copy_if_full(out, full, reader.meta()[META_STORE_ID], reader.positions(),
                                  lambda o: copy_idle(path, o))
            if copied is not None:
                reader.close()
                return finish_copy(copied, out, url)
        return write_snapshot(reader, out, full=full)


def ask_projector(store_path: str, out: Path, full: bool, timeout_s: float,
                  tuning: Tuning = DEFAULT_TUNING) -> SnapshotResult | StoreReader:
    """The projector's answer to a request; or a reader of the store, if the projector
    stopped before claiming it."""
    folder = requests_dir(store_path)
    rid = submit(store_path, out, full)
    request, result = folder / f"{rid}.request.json", folder / f"{rid}.result.json"
    claim_s = min(tuning.snapshot_claim_s, timeout_s)
    started = time.monotonic()
    while True:
        if result.exists():
            raw = json.loads(result.read_text())
            result.unlink(missing_ok=True)
            if not raw.get("ok"):
                raise StoreError(f"the projector of {store_path} failed to take the "
                                 f"snapshot: {raw.get('error')}")
            return SnapshotResult.from_json(raw["result"])
        waited = time.monotonic() - started
        reader = _readable(store_path, tuning)
        if request.exists():
            if reader is not None or waited > claim_s:
                with suppress(FileNotFoundError):
                    request.unlink()  # withdrawn: nobody will take it now
                    if reader is not None:
                        return reader
                    raise StoreLocked(
                        f"DuckDB store {store_path} is open for writing by another process "
                        "and no projector took the snapshot request within "
                        f"{claim_s:g}s "
                        "(a replay, or a projector of an older version?)")
        elif reader is not None and not result.exists():
            reader.close()
            raise StoreError(f"the projector of {store_path} stopped before the snapshot "
                             "was done")
        if reader is not None:
            reader.close()
        if waited > timeout_s:
            raise StoreError(f"no snapshot from the projector of {store_path} within "
                             f"--timeout {timeout_s:g}s")
        time.sleep(tuning.snapshot_poll_s)


def _readable(store_path: str, tuning: Tuning) -> StoreReader | None:
    try:
        return DuckDBReader.of_file(store_path, f"duckdb:///{store_path}",
                                    tuning.snapshot_batch_rows)
    except StoreLocked:
        return None


@contextmanager
def consistent_reader(url: str, scratch: Path, timeout_s: float | None = None,
                      tuning: Tuning = DEFAULT_TUNING) -> Iterator[StoreReader]:
    """A reader of the store at url; of a fresh snapshot in scratch (removed after) when a
    running projector holds the DuckDB file."""
    try:
        reader = open_reader(url, tuning.snapshot_batch_rows)
    except StoreLocked:
        from projections.duckdb_store import duckdb_path

        store_path = duckdb_path(url)
        temp = scratch / f".ledger-read-{uuid.uuid4().hex[:8]}.duckdb"
        try:
            got = ask_projector(store_path, temp, True,
                                tuning.snapshot_wait_s if timeout_s is None else timeout_s,
                                tuning)
            if isinstance(got, SnapshotResult):
                got = DuckDBReader.of_file(str(temp), f"duckdb:///{temp}",
                                           tuning.snapshot_batch_rows)
            with got:
                yield got
        finally:
            temp.unlink(missing_ok=True)
        return
    with reader:
        yield reader
