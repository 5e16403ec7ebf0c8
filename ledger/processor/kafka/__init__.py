"""The confluent-kafka adapters of the processor's ports (see ledger/processor/ports.py)."""

from ledger.processor.kafka.accounts import KafkaAccountsTable
from ledger.processor.kafka.changelog import KafkaChangelogReader
from ledger.processor.kafka.journal import KafkaJournalLookup, pending_commands
from ledger.processor.kafka.sink import KafkaTransactionalSink
from ledger.processor.kafka.source import KafkaCommandSource

__all__ = [
    "KafkaAccountsTable",
    "KafkaChangelogReader",
    "KafkaCommandSource",
    "KafkaJournalLookup",
    "KafkaTransactionalSink",
    "pending_commands",
]
