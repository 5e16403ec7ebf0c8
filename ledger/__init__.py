"""The points ledger library: the domain, the wire format, Kafka plumbing, the command
processor and the client (the read side is the projections package)."""
