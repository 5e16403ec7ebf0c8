"""The benchmark suite: `python -m bench` measures the ledger side by side in one run.

Phases, all over the same generated journal topic:
  generate   N valid journal events (+ account states), written transactionally
  raw        plain confluent-kafka consume of the journal, no decoding (the ceiling)
  kafka-perf Kafka's own ConsumerPerformance tool from the broker's jars
  baseline   a seed-style projector: one ORM unit of work and one commit per record
  replay     `ledger replay` into DuckDB (--out) and into Postgres, each its own process
  processor  `ledger serve` over a pre-filled command topic (exactly-once throughput),
             then submit-to-outcome latency at a fixed offered load; measured in a
             second round, after a warm-up round on its own topics (a fresh broker's
             JIT has not yet compiled its transaction paths)
The report (JSON, markdown, PNG) lands in --out.
"""
