"""Kafka client plumbing: one place builds every client's configuration."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from ledger.errors import InfrastructureError
from ledger.settings import Settings

# librdkafka's default (consistent_random, CRC32) differs from the Java client's; every
# producer of the ledger uses murmur2 so that all topics stay co-partitioned with Java too.
PARTITIONER = "murmur2_random"
KAFKA_LOG = logging.getLogger("ledger.kafka")


def base_config(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {"bootstrap.servers": settings.bootstrap, "logger": KAFKA_LOG}
    conf.update(settings.kafka_extra)
    return conf


def producer_config(settings: Settings, transactional_id: str | None = None) -> dict[str, Any]:
    conf = base_config(settings)
    conf.update(
        {
            "acks": "all",
            "enable.idempotence": True,
            "partitioner": PARTITIONER,
            "compression.type": "lz4",
            "linger.ms": 5,
        }
    )
    if transactional_id:
        conf["transactional.id"] = transactional_id
        conf["transaction.timeout.ms"] = 60_000
        # Back-to-back transactions meet CONCURRENT_TRANSACTIONS while the last one's
        # markers are written; librdkafka's default 100 ms retry backoff then dominates the
        # latency tail (p99 at 2,000 commands/s: ~200 ms -> ~70 ms measured here).
        conf["retry.backoff.ms"] = 10
    return conf


def consumer_config(settings: Settings, group_id: str | None, **extra: Any) -> dict[str, Any]:
    conf = base_config(settings)
    conf.update(
        {
            # Without a group the consumer only assigns partitions by hand; librdkafka still
            # wants an id, which is never used to commit.
            "group.id": group_id or "ledger-reader-unused",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            # How long the fetcher waits before refetching a partition whose queue was full.
            # librdkafka's 1 s cut a replay's raw consume rate from ~400k/s to ~150k/s here;
            # 0 makes the fetcher thread spin on its locks while the queue stays full (3.3
            # of a 1M replay's 8.2 CPU seconds); 2 ms cost neither (replay 202k -> 237k/s).
            "fetch.queue.backoff.ms": 2,
        }
    )
    conf.update(extra)
    return conf


def make_producer(settings: Settings, transactional_id: str | None = None) -> Producer:
    return Producer(producer_config(settings, transactional_id))


def make_consumer(settings: Settings, group_id: str | None, **extra: Any) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **extra))


def make_admin(settings: Settings, errors: list[KafkaError] | None = None) -> AdminClient:
    """An admin client; `errors` collects what librdkafka reports (served by poll())."""
    conf = base_config(settings)
    if errors is not None:
        conf["error_cb"] = errors.append
        if not KAFKA_LOG.isEnabledFor(logging.DEBUG):
            # poll() also serves librdkafka's log lines: one per retry while a broker refuses
            # us. The error raised says it once; the lines are for -vv.
            conf["log_level"] = 0
    return AdminClient(conf)


# Errors that waiting will not cure: a wrong password, a TLS setup the broker refuses.
_DEFINITIVE = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})


def unreachable(
    settings: Settings, e: BaseException | str, cause: KafkaError | None = None
) -> InfrastructureError:
    detail = e.args[0] if isinstance(e, KafkaException) and e.args else e
    hint = ""
    if isinstance(detail, KafkaError):
        if detail.code() == KafkaError._TRANSPORT and cause is None:
            hint = _security_hint(settings.bootstrap)
        detail = detail.str()
    if cause is not None:  # the reason behind a generic failure, e.g. authentication
        detail = cause.str()
    return InfrastructureError(f"cannot reach Kafka at {settings.bootstrap}: {detail}{hint}")


def _security_hint(bootstrap: str) -> str:
    """Why a broker that accepts TCP drops us: its listener wants SASL or TLS we lack.

    librdkafka reports that as a bare "transport failure", the same as a closed port.
    """
    for address in bootstrap.split(",")[:3]:
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
                return (" (the broker accepts connections but closed ours: its listener "
                        "may require SASL or TLS; pass client settings with --kafka-config)")
        except (OSError, ValueError):
            continue
    return ""


def _metadata(settings: Settings, topic: str | None, timeout: float) -> tuple[AdminClient, Any]:
    """Cluster metadata, or InfrastructureError naming why (fast on a refused login)."""
    errors: list[KafkaError] = []
    admin = make_admin(settings, errors)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return admin, admin.list_topics(topic, timeout=max(0.1, min(1.0, left)))
        except KafkaException as e:
            admin.poll(0)  # serves error_cb: librdkafka's reason, if it has one
            cause = next((x for x in errors if x.code() in _DEFINITIVE), None)
            timed_out = e.args[0].code() == KafkaError._TIMED_OUT
            if cause is not None or not timed_out or time.monotonic() >= deadline:
                raise unreachable(settings, e, cause) from e


def check_reachable(settings: Settings, timeout: float = 10.0) -> AdminClient:
    """An admin client that has answered once, or InfrastructureError."""
    return _metadata(settings, None, timeout)[0]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's and librdkafka's murmur2_random) of a key."""
    length = len(data)
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length % 4
    if tail:
        rest = data[length - tail :]
        if tail >= 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h ^= rest[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition every ledger producer picks for a key (positive murmur2, as Java)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def topic_partitions(settings: Settings, topic: str) -> int:
    """The partition count of an existing topic (what routing must use, not a setting)."""
    meta = _metadata(settings, topic, 10.0)[1].topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise InfrastructureError(f"topic {topic} does not exist: run `ledger topics create`")
    return len(meta.partitions)


def consumer_lag(consumer: Consumer, topic: str, partitions: list[int]) -> dict[int, int]:
    """Records behind the end, per assigned partition (cached watermarks, no broker call).

    Call it from the thread that consumes: the client serialises calls, so a call from
    another thread waits while a consume() is in progress.
    """
    if not partitions:
        return {}
    lag = {}
    try:
        for tp in consumer.position([TopicPartition(topic, p) for p in partitions]):
            low, high = consumer.get_watermark_offsets(tp, cached=True)
            # Nothing consumed yet (no position): the whole partition is still ahead.
            start = tp.offset if tp.offset >= 0 else low
            if start >= 0 and high >= 0:
                lag[tp.partition] = max(0, high - start)
    except (KafkaException, RuntimeError):
        return {}  # partitions moving in a rebalance: measured again on the next poll
    return lag


# Answers a broker gives for a partition it does not lead yet, e.g. just after creation,
# or for a group whose coordinator is not ready yet, e.g. on a broker that just started.
_NOT_YET = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


T = TypeVar("T")


def retrying(call: Callable[[], T], timeout: float = 10.0) -> T:
    """call(), again every 0.1 s for up to `timeout` while Kafka answers "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException as e:
            err = e.args[0]
            transient = isinstance(err, KafkaError) and (err.retriable() or err.code() in _NOT_YET)
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float = 10.0) -> tuple[int, int]:
    """(low, high) offsets, retrying while the partition has no leader yet."""
    low, high = retrying(lambda: consumer.get_watermark_offsets(tp, timeout=timeout), timeout)
    return int(low), int(high)


def committed(consumer: Consumer, tps: list[TopicPartition],
              timeout: float = 10.0) -> list[TopicPartition]:
    """The group's committed offsets, retrying while its coordinator is not ready yet."""
    return list(retrying(lambda: consumer.committed(tps, timeout=timeout), timeout))


def consume_ready(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Wait up to `timeout` for the first message, then take what else is already fetched.

    consume(n, timeout) waits for n messages or the whole timeout, which adds the
    timeout to every outcome's latency at low rates; this returns as soon as work exists.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)] if max_messages > 1 else [first]


def positions(consumer: Consumer,
              starts: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """Each partition's position; one with none yet (nothing consumed) is at its start."""
    if not starts:
        return {}
    found = consumer.position([TopicPartition(t, p) for t, p in starts])
    return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0
            else starts[(tp.topic, tp.partition)] for tp in found}


def reached_ends(consumer: Consumer, ends: Mapping[tuple[str, int], int],
                 starts: Mapping[tuple[str, int], int] | None = None) -> dict[tuple[str, int], int]:
    """The positions of the partitions whose position reached its end (ends measured
    before reading; `starts`: where a partition with no position yet stands).

    Every bounded read of the ledger ends this way. Not at an end-of-partition event: a
    new leader's high watermark can lag the old leader's for a moment after a broker
    failure, which ends a partition early. Nor at offset end-1: transaction markers and
    aborted records take offsets the consumer passes without returning them."""
    at = positions(consumer, {k: (starts or {}).get(k, -1) for k in ends})
    return {k: offset for k, offset in at.items() if offset >= ends[k]}
