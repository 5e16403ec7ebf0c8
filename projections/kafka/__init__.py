"""The confluent-kafka adapters of the projector's ports (see projections/ports.py)."""

from projections.kafka.deadletter import KafkaDeadLetterSink
from projections.kafka.source import KafkaJournalSource

__all__ = ["KafkaDeadLetterSink", "KafkaJournalSource"]
