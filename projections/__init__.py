"""The read side: projection stores (DuckDB, Postgres), the projector, replay, verify,
snapshots and exports for analysts."""
