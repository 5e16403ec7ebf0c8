"""One root error and the exit codes: each error family carries its code, the CLI exits
with it (cli.main)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The CLI's exit codes (a contract: README "Exit codes")."""

    OK = 0
    REJECTED = 1  # a command rejected, a verification failed
    USAGE = 2  # bad input or configuration; a store or statement refused
    UNREACHABLE = 3  # a broker, database or local tool could not be reached; not sent
    OUTCOME_UNKNOWN = 4  # a command sent, its outcome not known within --timeout
    INTERRUPTED = 130  # Ctrl-C


class LedgerError(Exception):
    """Root of every error the ledger raises on purpose."""

    exit_code: int = ExitCode.REJECTED


class RejectedError(LedgerError):
    """A command was rejected or a verification failed (exit 1)."""

    exit_code: int = ExitCode.REJECTED


class UsageError(LedgerError):
    """Bad input from the user: arguments, options, configuration (exit 2)."""

    exit_code: int = ExitCode.USAGE


class InfrastructureError(LedgerError):
    """A broker, database or local tool could not be reached (exit 3)."""

    exit_code: int = ExitCode.UNREACHABLE


class TopicConfigError(LedgerError):
    """An existing topic has configs that would lose data (exit 2)."""

    exit_code: int = ExitCode.USAGE


class MissingTopicsError(TopicConfigError):
    """The ledger's topics do not exist (yet) (exit 2)."""


class CodecError(LedgerError):
    """Bytes could not be decoded into a ledger record."""

    exit_code: int = ExitCode.REJECTED


class UnknownFingerprintError(CodecError):
    """The writer schema's fingerprint is not in the schema catalogue."""


class TruncatedRecordError(CodecError):
    """The record ended before its header or body was complete."""


class MalformedRecordError(CodecError):
    """The bytes are not single-object encoded Avro of a known schema."""


class StoreError(LedgerError):
    """A projection store failed or holds data it cannot use."""

    exit_code: int = ExitCode.UNREACHABLE


class StoreUnavailableError(StoreError):
    """The store's server went away (outage, restart): retrying later may succeed."""


class WaitTimeoutError(LedgerError):
    """Sent and acknowledged, but no outcome arrived in time: the processor is not running
    or is stalled, and will decide the command when it runs (exit 4)."""

    exit_code: int = ExitCode.OUTCOME_UNKNOWN


class QueryError(UsageError):
    """`ledger query` refused a statement or the statement failed (exit 2)."""


class JournalMismatchError(UsageError):
    """A store holds the projection of another journal (exit 2)."""
