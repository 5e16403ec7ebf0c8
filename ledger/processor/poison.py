"""Records the processor cannot handle: the poison-pill error and their dead letters."""

from __future__ import annotations

from ledger.processor.ports import Record, RecordWriter


class Poisoned(Exception):
    """Handling one record failed in a way a retry would repeat."""

    def __init__(self, position: tuple[int, int], error: Exception) -> None:
        super().__init__(str(error))
        self.position, self.error = position, error


def position_of(msg: Record) -> tuple[int, int]:
    """Partition and offset of a consumed record (never None once consumed)."""
    partition, offset = msg.partition(), msg.offset()
    assert partition is not None and offset is not None
    return partition, offset


# Kafka's producer refuses messages over ~1 MB (message.max.bytes); the original of a
# dead letter may already be that large, and the headers add to it.
DEAD_LETTER_MAX_BYTES = 990_000


def dead_letter(producer: RecordWriter, topic: str, msg: Record, error: Exception) -> None:
    """The original bytes under the original key, with headers saying where and why.

    A record too large to copy with its headers keeps its first bytes and says so in a
    `truncated` header; the whole record stays at its source offset until retention.
    """
    key, value = msg.key(), msg.value()
    headers: list[tuple[str, str | bytes | None]] = [
        ("source_topic", (msg.topic() or "").encode()),
        ("source_partition", str(msg.partition()).encode()),
        ("source_offset", str(msg.offset()).encode()),
        ("error", f"{type(error).__name__}: {error}".encode()[:4096]),
    ]
    room = DEAD_LETTER_MAX_BYTES - sum(len(k) + len(v or b"") for k, v in headers)
    sizes = (len(key or b""), len(value or b""))
    if sum(sizes) > room:
        key = key[: room // 2] if key is not None else None
        value = value[: room - len(key or b"")] if value is not None else None
        headers.append(("truncated", f"key {sizes[0]} bytes, value {sizes[1]} bytes".encode()))
    producer.produce(topic, key=key, value=value, headers=headers)
