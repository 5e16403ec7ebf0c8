"""KafkaDeadLetterSink: bad records to <prefix>.deadletter, acknowledged before a batch commits."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer

from ledger.errors import InfrastructureError
from ledger.kafka import make_producer
from ledger.settings import Settings
from projections.deadletter import headers_for
from projections.ingest import BadRecord


class KafkaDeadLetterSink:
    """Produces bad records durably (acks=all); the producer is made on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic("deadletter")
        self._producer: Producer | None = None
        self.sent = 0

    def send(self, bad: Sequence[BadRecord]) -> None:
        """Produce and flush; raise InfrastructureError unless every record is acknowledged."""
        if not bad:
            return
        if self._producer is None:
            self._producer = make_producer(self.settings)
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err.str())

        for b in bad:
            self._producer.produce(self.topic, value=b.value, key=b.key, headers=headers_for(b),
                                   on_delivery=on_delivery)
        left = self._producer.flush(self.settings.tuning.deadletter_flush_s)
        if left or failures:
            raise InfrastructureError(
                f"cannot dead-letter {len(bad)} records to {self.topic} at "
                f"{self.settings.bootstrap}: {failures[0] if failures else 'flush timed out'}")
        self.sent += len(bad)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.settings.tuning.deadletter_flush_s)
