"""The seed's projector, re-created as the baseline: one record, one unit of work, one commit.

Like the seed's Spring JPA consumer (DIGEST.md), for each journal record it loads
the point row of every account it touches through the ORM, changes it, saves an
audit-log row per posting, and commits, one record at a time. It is slow by
construction, so it runs on a sample (the first records of the journal) in its
own Postgres schema.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import TopicPartition
from sqlalchemy import BigInteger, Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from ledger.kafka import make_consumer
from ledger.settings import Settings
from ledger.wire import Codec


class Base(DeclarativeBase):
    pass


class SeedPoint(Base):
    """The seed's point table: one row per user or room, holding its balance."""

    __tablename__ = "seed_point"
    account: Mapped[str] = mapped_column(String(80), primary_key=True)
    point: Mapped[int] = mapped_column(BigInteger)


class SeedPointLog(Base):
    """The seed's point log: ADDED/SUBTRACTED, SYSTEM/USER, per change."""

    __tablename__ = "seed_point_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(80))
    amount: Mapped[int] = mapped_column(BigInteger)
    direction: Mapped[str] = mapped_column(String(10))
    actor: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(String(200))
    event_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column()


@dataclass
class BaselineResult:
    records: int
    seconds: float
    postings: int

    @property
    def per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def seed_style_projector(settings: Settings, postgres_url: str, sample: int,
                         codec: Codec | None = None) -> BaselineResult:
    """Project the first `sample` committed journal records the seed's way; time it all."""
    codec = codec or Codec()
    engine = create_engine(postgres_url, poolclass=NullPool)
    Base.metadata.create_all(engine)
    topic = settings.topic("events")
    consumer = make_consumer(settings, None)
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    records = postings = 0
    started = time.monotonic()
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        with Session(engine) as session:
            while records < sample:
                msg = consumer.poll(1.0)
                if msg is None or msg.error() is not None:
                    continue
                event = codec.decode_as("event", msg.value())
                for p in event["postings"]:
                    row = session.get(SeedPoint, p["account"])
                    if row is None:
                        row = SeedPoint(account=p["account"], point=0)
                        session.add(row)
                    row.point += p["amount"]
                    session.add(SeedPointLog(
                        account=p["account"], amount=abs(p["amount"]),
                        direction="ADDED" if p["amount"] > 0 else "SUBTRACTED",
                        actor=event["actor"], reason=event["reason"],
                        event_id=event["event_id"],
                        created_at=datetime.fromtimestamp(event["occurred_at"] / 1000, UTC)))
                    postings += 1
                session.commit()
                records += 1
        seconds = time.monotonic() - started
    finally:
        consumer.close()
        engine.dispose()
    return BaselineResult(records, seconds, postings)
