"""One bench run: every phase over the same journal topic, then the report."""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import consume, journal, machine, processor
from bench.baseline import seed_style_projector
from bench.chart import draw
from bench.replay import ReplayRun, run_replay
from bench.report import Report
from bench.stack import Target, delete_topics, drop_schema, fresh_schema_url, postgres_version
from ledger.settings import Settings, read_kafka_config
from ledger.topics import TOPICS, create_topics
from ledger.wire import Codec

LOG = logging.getLogger("bench")
PHASES = ("generate", "raw", "kafka-perf", "replay-duckdb", "replay-postgres", "baseline",
          "processor")


@dataclass(frozen=True)
class Options:
    events: int
    out: Path
    partitions: int
    baseline_sample: int
    commands: int
    accounts: int
    latency_rate: float
    latency_seconds: float
    max_batch: int
    jars: Path
    seed: int
    skip: frozenset[str]
    keep: bool
    quiet_wait: float = 0.0
    quiet_cpu: float = 40.0
    kafka_config: Path | None = None
    warmup_commands: int = 0
    warmup_seconds: float = 0.0


class Bench:
    def __init__(self, opts: Options, target: Target) -> None:
        self.opts = opts
        self.target = target
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.settings = Settings(bootstrap=target.bootstrap, topic_prefix=self.prefix,
                                 partitions=opts.partitions,
                                 kafka_extra=read_kafka_config(opts.kafka_config))
        self.proc_settings = self.settings.with_(topic_prefix=f"{self.prefix}-proc")
        self.warm_settings = self.settings.with_(topic_prefix=f"{self.prefix}-warm")
        self.codec = Codec()
        self.report = Report(config={
            "events": opts.events, "partitions": opts.partitions, "topic_prefix": self.prefix,
            "bootstrap": target.bootstrap, "own_stack": target.started_home is not None,
            "baseline_sample": opts.baseline_sample, "commands": opts.commands,
            "accounts": opts.accounts, "latency_rate": opts.latency_rate,
            "latency_seconds": opts.latency_seconds, "max_batch": opts.max_batch,
            "warmup_commands": opts.warmup_commands, "warmup_seconds": opts.warmup_seconds,
            "seed": opts.seed, "quiet_wait_s": opts.quiet_wait, "quiet_cpu_pct": opts.quiet_cpu,
            "kafka_config": self.settings.redacted_kafka_extra()})
        self.schemas: list[str] = []

    def run(self) -> Report:
        opts = self.opts
        opts.out.mkdir(parents=True, exist_ok=True)
        self.report.machine = machine.describe(opts.jars, postgres_version(
            self.target.postgres_url))
        self.report.config["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        create_topics(self.settings)
        phases: list[tuple[str, list[str], Callable[[], None]]] = [
            ("generate", [], self._generate),
            ("raw", ["raw_consume", "raw_consume_tuned"], self._raw),
            ("kafka-perf", ["kafka_consumer_perf"], self._kafka_perf),
            ("replay-duckdb", ["replay_duckdb", "replay_duckdb_peak_rss"],
             lambda: self._replay("duckdb")),
            ("replay-postgres", ["replay_postgres", "replay_postgres_peak_rss"],
             lambda: self._replay("postgres")),
            ("baseline", ["seed_baseline"], self._baseline),
            ("processor", ["processor", "latency_p50", "latency_p99"], self._processor),
        ]
        try:
            for name, figures, measure in phases:
                if name in opts.skip:
                    LOG.info("phase %s skipped", name)
                    continue
                with self._phase(name, figures):
                    measure()
        finally:
            self._cleanup()
        paths = self.report.write(opts.out)
        try:
            draw(self.report, opts.out / "report.png")
        except Exception as e:  # a chart must never cost the numbers
            LOG.warning("chart failed: %s", e)
        LOG.info("report: %s, %s, %s", paths["json"], paths["markdown"], opts.out / "report.png")
        return self.report

    @contextmanager
    def _phase(self, name: str, figures: list[str]) -> Iterator[None]:
        busy, waited = (machine.wait_quiet(self.opts.quiet_wait, self.opts.quiet_cpu)
                        if self.opts.quiet_wait > 0 else (None, 0.0))
        if busy is not None and busy >= self.opts.quiet_cpu:
            LOG.warning("phase %s starts on a busy machine: %.0f%% CPU in use by others", name,
                        busy)
        LOG.info("phase %s ...", name)
        load = machine.load()
        started = time.monotonic()
        try:
            yield
        except Exception as e:
            LOG.error("phase %s failed: %s\n%s", name, e, traceback.format_exc())
            for key in figures:
                if key in self.report.figures:
                    continue
                self.report.fail(key, f"{type(e).__name__}: {e}")
            if name == "generate":
                raise
        finally:
            seconds = time.monotonic() - started
            self.report.phases.append({"name": name, "seconds": round(seconds, 2),
                                       "load": load, "cpu_busy_before_pct": busy,
                                       "waited_for_quiet_s": round(waited, 1),
                                       "load_after": machine.load()})
            LOG.info("phase %s done in %.1fs", name, seconds)

    # --- phases -------------------------------------------------------------------------

    def _generate(self) -> None:
        shape = journal.Shape.for_events(self.opts.events, self.opts.seed)
        gen = journal.write_journal(self.settings, shape, self.codec,
                                    progress=_progress("generate"))
        self.report.config["journal"] = {
            "events": gen.events, "accounts": gen.accounts, "users": shape.users,
            "rooms": shape.rooms, "postings": gen.postings, "value_bytes": gen.bytes,
            "transactions": gen.transactions, "kinds": dict(gen.kinds),
            "generate_seconds": round(gen.seconds, 2),
            "generate_events_per_s": round(gen.events_per_s)}
        LOG.info("generated %d events in %.1fs (%.0f/s)", gen.events, gen.seconds,
                 gen.events_per_s)

    def _raw(self) -> None:
        n = self.opts.events
        # The ceiling is the better of two passes: the first can still meet the write-back
        # of the journal just generated and a broker whose fetch path is not yet compiled.
        passes = [consume.raw_consume(self.settings, n) for _ in range(2)]
        raw = max(passes, key=lambda r: r.per_s)
        self.report.set("raw_consume", raw.per_s,
                        f"{raw.mb_per_s:.0f} MB/s of values; the better of two passes "
                        f"({', '.join(f'{r.per_s:,.0f}/s' for r in passes)})",
                        seconds=raw.seconds, records=raw.records,
                        passes_per_s=[r.per_s for r in passes])
        # The same without the ledger's fetch-queue settings: librdkafka's defaults.
        tuned = consume.raw_consume(self.settings, n, extra={
            "fetch.queue.backoff.ms": 1000, "queued.max.messages.kbytes": 65536})
        self.report.set("raw_consume_tuned", tuned.per_s,
                        "each partition whose queue filled waits 1 s before its next fetch",
                        seconds=tuned.seconds, records=tuned.records)

    def _kafka_perf(self) -> None:
        perf = consume.kafka_consumer_perf(self.settings, self.opts.jars, self.opts.events)
        self.report.set("kafka_consumer_perf", perf.rate.per_s,
                        f"{perf.total_per_s:,.0f}/s with its {perf.rebalance_ms:.0f} ms "
                        "group join", fetch_seconds=perf.rate.seconds,
                        records=perf.rate.records, total_per_s=perf.total_per_s)

    def _replay(self, kind: str) -> None:
        run: ReplayRun
        if kind == "duckdb":
            out = self.opts.out / "replay.duckdb"
            run = run_replay(self.settings, "duckdb:///unused.duckdb", out,
                             kafka_config=self.opts.kafka_config)
            if not self.opts.keep:
                for path in (out, out.with_name(out.name + ".wal")):
                    path.unlink(missing_ok=True)
        else:
            url = fresh_schema_url(self.target.postgres_url, f"{self.prefix}_replay")
            self.schemas.append(url)
            run = run_replay(self.settings, url, kafka_config=self.opts.kafka_config)
        if run.events != self.opts.events:
            raise RuntimeError(f"replay read {run.events} events, expected {self.opts.events}")
        self.report.set(f"replay_{kind}", run.per_s,
                        f"{run.reported_per_s:,.0f}/s as `ledger replay` reports it "
                        "(without interpreter start-up)", seconds=run.seconds,
                        reported_per_s=run.reported_per_s, accounts=run.accounts)
        self.report.set(f"replay_{kind}_peak_rss", run.peak_rss_mb,
                        f"summed RSS of {run.processes} process(es) or the largest one's "
                        f"high-water mark, whichever is higher (PSS {run.peak_pss_mb:.0f} MB, "
                        f"largest process's VmHWM {run.hwm_mb:.0f} MB); "
                        f"{run.growth_mb:+.0f} MB from mid-run to the end",
                        growth_mb=run.growth_mb, peak_pss_mb=run.peak_pss_mb,
                        hwm_mb=run.hwm_mb, processes=run.processes,
                        mid_run_mb=run.rss_mid_mb, end_mb=run.rss_end_mb)

    def _baseline(self) -> None:
        url = fresh_schema_url(self.target.postgres_url, f"{self.prefix}_seed")
        self.schemas.append(url)
        sample = min(self.opts.baseline_sample, self.opts.events)
        res = seed_style_projector(self.settings, url, sample, self.codec)
        self.report.set("seed_baseline", res.per_s,
                        f"first {res.records:,} records, {res.postings:,} postings",
                        seconds=res.seconds, records=res.records)

    def _processor(self) -> None:
        opts = self.opts
        warm: dict[str, float] = {}
        after = ""
        if opts.warmup_commands > 0:
            LOG.info("processor warm-up round: %d commands, then %.0f/s for %.0fs ...",
                     opts.warmup_commands, opts.latency_rate, opts.warmup_seconds)
            w = self._write_path_round(self.warm_settings, opts.warmup_commands,
                                       opts.warmup_seconds, opts.out / "serve-warmup.log")
            warm = {"warmup_commands": opts.warmup_commands,
                    "warmup_seconds": opts.warmup_seconds, "warmup_per_s": w.throughput.per_s,
                    "warmup_p50_ms": w.latency.p50_ms, "warmup_p99_ms": w.latency.p99_ms}
            after = (f"; after a warm-up round ({w.throughput.per_s:,.0f} commands/s, "
                     f"p99 {w.latency.p99_ms:.0f} ms over {opts.warmup_seconds:.0f}s)")
            LOG.info("warm-up round: %.0f commands/s, p99 %.0f ms", w.throughput.per_s,
                     w.latency.p99_ms)
        r = self._write_path_round(self.proc_settings, opts.commands, opts.latency_seconds,
                                   opts.out / "serve.log", self._before_latency)
        run, lat = r.throughput, r.latency
        self.report.set("processor", run.per_s,
                        f"{opts.commands:,} earn/spend over {opts.accounts:,} accounts; "
                        f"start-up {run.startup_seconds:.1f}s not counted{after}",
                        seconds=run.seconds, wall_seconds=run.wall_seconds,
                        startup_seconds=run.startup_seconds, commands=run.commands, **warm)
        details = {"offered_per_s": lat.offered_per_s, "achieved_per_s": lat.achieved_per_s,
                   "sent": lat.sent, "received": lat.received, "p90_ms": lat.p90_ms,
                   "max_ms": lat.max_ms, **warm}
        note = f"{lat.sent:,} commands at {lat.achieved_per_s:,.0f}/s, {lat.received:,} answered"
        self.report.set("latency_p50", lat.p50_ms, note, **details)
        self.report.set("latency_p99", lat.p99_ms, f"max {lat.max_ms:.0f} ms{after}", **details)

    def _write_path_round(self, s: Settings, commands: int, seconds: float, log: Path,
                          before_latency: Callable[[processor.ProcessorRun], None] | None = None,
                          ) -> processor.WritePathRound:
        opts = self.opts
        return processor.write_path_round(
            s, self.codec, commands, opts.accounts, opts.seed, opts.max_batch,
            opts.latency_rate, seconds, log, opts.kafka_config, before_latency)

    def _before_latency(self, run: processor.ProcessorRun) -> None:
        opts = self.opts
        if opts.quiet_wait > 0:
            busy, _ = machine.wait_quiet(opts.quiet_wait, opts.quiet_cpu)
            self.report.config["cpu_busy_before_latency_pct"] = busy
        LOG.info("processor: %.0f commands/s; latency at %.0f/s for %.0fs ...", run.per_s,
                 opts.latency_rate, opts.latency_seconds)

    def _cleanup(self) -> None:
        for url in self.schemas:
            try:
                drop_schema(url)
            except Exception as e:
                LOG.warning("could not drop a bench schema: %s", e)
        if self.target.started_home is None and not self.opts.keep:
            names = [t.name for t in TOPICS]
            for s in (self.settings, self.proc_settings, self.warm_settings):
                delete_topics(s, names)


def _progress(label: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        LOG.info("%s: %d/%d", label, done, total)

    return show
