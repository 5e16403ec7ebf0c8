"""Seeded crash schedules: kill the processor and projector with SIGKILL, then prove nothing
was lost or duplicated against an independent fold of the journal."""
