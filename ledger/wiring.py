"""The one place that builds the ledger's pieces from settings (CLI, services, bench, tests).

The processor's and the projector's adapters are picked here: Kafka's, or in-memory ones
(`memory=`) that tests and demonstrations run the same logic on."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from ledger.client import LedgerClient
from ledger.credits import CreditSigner
from ledger.errors import UsageError
from ledger.health import Endpoint
from ledger.kafka import make_consumer, make_producer
from ledger.processor import CommandProcessor
from ledger.processor.kafka import (
    KafkaAccountsTable,
    KafkaChangelogReader,
    KafkaCommandSource,
    KafkaJournalLookup,
    KafkaTransactionalSink,
)
from ledger.processor.kafka.sink import ProducerFactory
from ledger.processor.kafka.source import ConsumerFactory
from ledger.processor.memory import (
    InMemoryAccountsTable,
    InMemoryBroker,
    InMemoryChangelogReader,
    InMemoryCommandSource,
    InMemoryJournalLookup,
    InMemoryTransactionalSink,
)
from ledger.processor.ports import ProcessorPorts
from ledger.processor.service import ProcessorTuning, state_file
from ledger.processor.state import ProcessorStats
from ledger.processor.store import StateStore
from ledger.settings import ENV_CREDIT_KEY, Settings
from ledger.wire import Codec

if TYPE_CHECKING:  # the read path's modules load Arrow: only where a projector is built
    from projections.memory import InMemoryJournal
    from projections.ports import ProjectorPorts
    from projections.projector import Projector
    from projections.snapshot_requests import Snapshotter
    from projections.store import ProjectionStore

log = logging.getLogger("ledger.processor")

NO_CREDIT_KEY = (
    f"{ENV_CREDIT_KEY} is not set: `ledger serve` signs the join credits it routes over the "
    "commands topic (which any client can write) with it; set the same secret on every "
    "processor, e.g. from `openssl rand -base64 32` (only `ledger dev up` and `ledger demo` "
    "make one themselves)"
)


@lru_cache(maxsize=1)
def codec() -> Codec:
    """The schema catalogue is read once per process."""
    return Codec()


def build_client(settings: Settings) -> LedgerClient:
    return LedgerClient(settings, codec())


@dataclass(frozen=True)
class ProcessorClients:
    """How the Kafka adapters make their clients: the seam where a test injects a fault."""

    producer: ProducerFactory = make_producer
    consumer: ConsumerFactory = make_consumer


def build_processor(
    settings: Settings,
    instance_id: str,
    max_batch: int = 2000,
    endpoint: Endpoint | None = None,
    clients: ProcessorClients | None = None,
    tuning: ProcessorTuning | None = None,
    memory: InMemoryBroker | None = None,
) -> CommandProcessor:
    """The command processor: on Kafka, or on `memory` (in-memory adapters, for tests and
    demonstrations). `clients` is the documented seam for Kafka client faults: tests pass
    factories whose producers or consumers misbehave on cue."""
    tuning = tuning or ProcessorTuning(max_batch=max_batch)
    signer = credit_signer(settings)
    log.info("routed credits: %s", signer.describe())
    stats = ProcessorStats()
    if memory is None:
        ports = kafka_ports(settings, instance_id, stats, tuning, clients or ProcessorClients())
    else:
        ports = memory_ports(memory, settings)
    store = StateStore(state_file(settings, instance_id))
    processor = CommandProcessor(settings, codec(), instance_id, signer, ports, store, stats,
                                 tuning)
    if endpoint is not None:
        from ledger.metrics import serve_processor_metrics

        serve_processor_metrics(processor, endpoint)
    return processor


def kafka_ports(settings: Settings, instance_id: str, stats: ProcessorStats,
                tuning: ProcessorTuning, clients: ProcessorClients) -> ProcessorPorts:
    """The processor's ports on confluent-kafka clients."""
    return ProcessorPorts(
        source=KafkaCommandSource(settings, instance_id, clients.consumer),
        sink=KafkaTransactionalSink(settings, instance_id, stats, clients.producer,
                                    tuning.txn_timeout_s),
        changelogs=KafkaChangelogReader(settings),
        journal=KafkaJournalLookup(settings, codec()),
        accounts=KafkaAccountsTable(settings, codec()),
    )


def memory_ports(broker: InMemoryBroker, settings: Settings) -> ProcessorPorts:
    """The processor's ports on an in-memory broker."""
    return ProcessorPorts(
        source=InMemoryCommandSource(broker, settings),
        sink=InMemoryTransactionalSink(broker, settings),
        changelogs=InMemoryChangelogReader(broker, settings),
        journal=InMemoryJournalLookup(broker, settings, codec()),
        accounts=InMemoryAccountsTable(broker, settings, codec()),
    )


def build_projector(
    settings: Settings,
    store: ProjectionStore,
    *,
    until_caught_up: bool = False,
    batch_records: int | None = None,
    batch_ms: int | None = None,
    snapshots: Snapshotter | None = None,
    memory: InMemoryJournal | None = None,
) -> Projector:
    """A projector into `store`: reading the journal on Kafka (the store's consumer group),
    or in `memory` (in-memory adapters, for tests). `batch_records`, `batch_ms`: the
    settings' tuning unless given; `snapshots`: taken between its batches."""
    from projections.projector import Projector

    ports = kafka_projector_ports(settings, store) if memory is None else \
        memory_projector_ports(memory, settings)
    return Projector(settings, store, ports, until_caught_up=until_caught_up,
                     batch_records=batch_records, batch_ms=batch_ms, codec=codec(),
                     snapshots=snapshots)


def kafka_projector_ports(settings: Settings, store: ProjectionStore) -> ProjectorPorts:
    """The projector's ports on confluent-kafka clients (made on first use)."""
    from projections.kafka import KafkaDeadLetterSink, KafkaJournalSource
    from projections.ports import ProjectorPorts
    from projections.projector import group_id

    return ProjectorPorts(journal=KafkaJournalSource(settings, group_id(settings, store)),
                          deadletters=KafkaDeadLetterSink(settings))


def memory_projector_ports(journal: InMemoryJournal, settings: Settings) -> ProjectorPorts:
    """The projector's ports on an in-memory journal."""
    from projections.memory import InMemoryDeadLetterSink, InMemoryJournalSource
    from projections.ports import ProjectorPorts

    return ProjectorPorts(journal=InMemoryJournalSource(journal, settings),
                          deadletters=InMemoryDeadLetterSink(journal, settings))


def credit_key_of(settings: Settings) -> str | None:
    """LEDGER_CREDIT_KEY, else the dev stack's own key when `settings` point at that stack."""
    if settings.credit_key:
        return settings.credit_key
    import devstack  # only here: it loads the dev stack's tooling

    return devstack.credit_key_for(settings.home, settings.bootstrap)


def credit_signer(settings: Settings) -> CreditSigner:
    """The one place a processor without a credit key is refused (exit 2, one line)."""
    key = credit_key_of(settings)
    if not key:
        raise UsageError(NO_CREDIT_KEY)
    return CreditSigner(key, settings.accepted_credit_keys)
