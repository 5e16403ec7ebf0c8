"""Reading <prefix>.deadletter: each record with the origin its headers name.

The processor (ledger.processor.poison.dead_letter) and the projector
(projections.deadletter) write the original key and value with the headers
source_topic, source_partition, source_offset and error; a record cut to fit
Kafka's size limit carries `truncated` too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Message

from ledger.journal import read_messages
from ledger.settings import Settings

ORIGIN = ("source_topic", "source_partition", "source_offset", "error")


@dataclass(frozen=True)
class DeadLetter:
    partition: int  # where the dead letter is, in the dead-letter topic
    offset: int
    timestamp_ms: int  # when it was dead-lettered
    key: str
    value_bytes: int
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    error: str
    other_headers: dict[str, str] = field(default_factory=dict)  # truncated, and any new one


def headers_of(msg: Message) -> dict[str, str]:
    """A record's headers as text (a header repeated: its last value)."""
    out: dict[str, str] = {}
    raw = msg.headers() or []
    for k, v in raw.items() if isinstance(raw, dict) else raw:
        if isinstance(v, bytes):
            out[k] = v.decode(errors="replace")
        elif v is not None:
            out[k] = str(v)
    return out


def dead_letter_of(msg: Message) -> DeadLetter:
    h = headers_of(msg)
    return DeadLetter(
        partition=msg.partition() or 0, offset=msg.offset() or 0,
        timestamp_ms=msg.timestamp()[1], key=(msg.key() or b"").decode("utf-8", "replace"),
        value_bytes=len(msg.value() or b""), source_topic=h.get("source_topic", ""),
        source_partition=_int(h.get("source_partition")),
        source_offset=_int(h.get("source_offset")), error=h.get("error", ""),
        other_headers={k: v for k, v in h.items() if k not in ORIGIN})


def read_dead_letters(settings: Settings, follow: bool = False,
                      partitions: Sequence[int] | None = None) -> Iterator[DeadLetter]:
    """The dead-letter topic from its start; stops at its end unless follow is set."""
    for msg in read_messages(settings, settings.topic("deadletter"), follow, partitions):
        yield dead_letter_of(msg)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
