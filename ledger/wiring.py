"""The one place that builds the ledger's pieces from settings (CLI, services, tests)."""

from __future__ import annotations

from functools import lru_cache

from ledger.client import LedgerClient
from ledger.codec import Codec
from ledger.credits import CreditSigner
from ledger.processor import CommandProcessor
from ledger.processor.service import ProcessorClients, ProcessorTuning
from ledger.settings import Settings


@lru_cache(maxsize=1)
def codec() -> Codec:
    """The schema catalogue is read once per process."""
    return Codec()


def build_client(settings: Settings) -> LedgerClient:
    return LedgerClient(settings, codec())


def build_processor(
    settings: Settings,
    instance_id: str,
    max_batch: int = 2000,
    metrics_port: int | None = None,
    clients: ProcessorClients | None = None,
    tuning: ProcessorTuning | None = None,
) -> CommandProcessor:
    """The command processor. `clients` is the documented seam for Kafka client faults:
    tests pass factories whose producers or consumers misbehave on cue."""
    tuning = tuning or ProcessorTuning(max_batch=max_batch)
    processor = CommandProcessor(
        settings, codec(), instance_id, CreditSigner(settings.credit_key), tuning,
        clients or ProcessorClients(),
    )
    if metrics_port is not None:
        from ledger.metrics import serve_processor_metrics

        serve_processor_metrics(processor, metrics_port)
    return processor
