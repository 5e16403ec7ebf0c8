"""Listed offsets (stable or high) through an admin client that survives leader moves."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from ledger.errors import InfrastructureError
from ledger.kafka import make_admin
from ledger.processor.ports import NotReadableYet
from ledger.settings import Settings

LATEST: Any = OffsetSpec.latest()  # type: ignore[no-untyped-call]
EARLIEST: Any = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
DEADLINE_S = 30.0  # leaders move under broker failures: retry this long


class StableOffsets:
    """list_offsets with retries on a fresh admin client (fresh metadata) each time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._admin: AdminClient | None = None

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = make_admin(self.settings)
        return self._admin

    def ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Last stable offsets: every committed record lies below them."""
        return self.offsets(dict.fromkeys(tps, LATEST), IsolationLevel.READ_COMMITTED)

    def offsets(self, specs: dict[TopicPartition, Any],
                isolation: IsolationLevel) -> dict[TopicPartition, int]:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                futures = self.admin.list_offsets(
                    specs, isolation_level=isolation,
                    request_timeout=self.settings.tuning.kafka_request_s)
                found = {tp: int(f.result().offset) for tp, f in futures.items()}
                unknown = [f"{tp.topic}[{tp.partition}]" for tp, o in found.items() if o < 0]
                if not unknown:
                    return found
                # A leader not ready to say (an offset of -1 or -1001): ask again.
                raise KafkaException(f"no offset yet for {', '.join(unknown)}")
            except KafkaException as e:
                # FENCED_LEADER_EPOCH, no leader yet: a fresh client with fresh metadata.
                self._admin = None
                if time.monotonic() > deadline:
                    raise InfrastructureError(f"cannot list offsets: {e}") from e
                time.sleep(0.5)

    def close(self) -> None:
        self._admin = None


def readable_end(offsets: StableOffsets, tp: TopicPartition) -> int:
    """The end of what was written to `tp`, settled or not (a read_committed watermark is
    the stable end: records of a transaction still settling lie beyond it and must be
    waited for, not taken as absent); NotReadableYet if the broker cannot say."""
    try:
        return offsets.offsets({tp: LATEST}, IsolationLevel.READ_UNCOMMITTED)[tp]
    except InfrastructureError as e:
        raise NotReadableYet(f"{tp.topic}[{tp.partition}]: {e}") from e
