"""The local development stack (`ledger dev up`): Kafka and PostgreSQL without Docker.

Tooling, not the ledger: the library never needs it to run against a real cluster. Its
modules: `stack` (up, down, status of the whole stack; re-exported here), `kafka` (the
broker jars, fetched with Maven from the pom shipped in this package, and the KRaft
brokers), `postgres`, `auth` (SCRAM users and a throwaway CA) and `proc` (pid files,
ports, signals).
"""

from devstack.stack import (
    EPHEMERAL_FLOOR,
    SIZES,
    ProcessInfo,
    StackInfo,
    candidate_bases,
    credit_key_file,
    credit_key_for,
    down,
    free_base,
    kill_broker,
    stack_ports,
    start_broker,
    status,
    up,
)

__all__ = ["EPHEMERAL_FLOOR", "SIZES", "ProcessInfo", "StackInfo", "candidate_bases",
           "credit_key_file", "credit_key_for", "down", "free_base", "kill_broker",
           "stack_ports", "start_broker", "status", "up"]
