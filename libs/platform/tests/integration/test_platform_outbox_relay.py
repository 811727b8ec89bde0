"""The outbox relay against a real Postgres and a real Kafka-protocol broker: rows of several events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY
from tweetshop_contracts import Envelope, ShipmentLocationUpdated, ShipmentStatusChanged, topics
from tweetshop_devstack.kafka_probe import read_topic
from tweetshop_platform import db, outbox
from tweetshop_platform.kafka import TopicNames, ensure_topics

SHIPMENT, ORDER = uuid.uuid4(), uuid.uuid4()
NOW = datetime.now(UTC)


def published(topic: str) -> float:
    """tweetshop_outbox_published_total of ``topic`` in this process, as a scrape would read it."""
    return REGISTRY.get_sample_value("tweetshop_outbox_published_total", {"topic": topic}) or 0.0


def fix(n: int, shipment_id: uuid.UUID = SHIPMENT) -> ShipmentLocationUpdated:
    return ShipmentLocationUpdated(
        producer="tracking",
        correlation_id="corr",
        shipment_id=shipment_id,
        order_id=ORDER,
        lat=48.0 + n / 1000,
        lon=2.35,
        recorded_at=NOW + timedelta(seconds=n),
    )


async def test_a_run_of_one_shipments_fixes_is_one_row_and_every_event_its_own_message_in_order(
    database: Any, kafka_bootstrap: str
) -> None:
    names = TopicNames(f"relay-{uuid.uuid4().hex[:8]}.")
    await ensure_topics(kafka_bootstrap, [names.physical(topics.TRACKING_LOCATIONS)], partitions=1)
    await ensure_topics(kafka_bootstrap, [names.physical(topics.TRACKING_SHIPMENTS)], partitions=1)
    dsn = await database.provision("relaysvc")
    pool = await db.create_pool(dsn, "relaysvc", min_size=1, max_size=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await db.apply_migrations(pool, "relaysvc", db.platform_migrations())
        moved = ShipmentStatusChanged(
            producer="tracking",
            correlation_id="corr",
            shipment_id=SHIPMENT,
            order_id=ORDER,
            from_status="label_created",
            to_status="in_transit",
        )
        other = uuid.uuid4()
        run = [fix(n) for n in range(outbox.MAX_EVENTS_PER_ROW + 3)]  # one row full, the next of three
        events: list[Envelope] = [*run, moved, fix(0, other), fix(1, other)]
        async with pool.acquire() as conn:
            async with conn.transaction():
                await outbox.enqueue(conn, *events)
            rows = await conn.fetch(
                "SELECT event_id, event_type, message_key, cardinality(more_event_ids) AS more FROM outbox ORDER BY id"
            )
            assert [(r["event_type"], r["message_key"], r["more"]) for r in rows] == [
                ("ShipmentLocationUpdated", str(SHIPMENT), outbox.MAX_EVENTS_PER_ROW - 1),
                ("ShipmentLocationUpdated", str(SHIPMENT), 2),
                ("ShipmentStatusChanged", str(SHIPMENT), None),
                ("ShipmentLocationUpdated", str(other), 1),
            ]
            published_before = published(topics.TRACKING_LOCATIONS)

            # A batch of 10 events takes the rows up to the one that crosses 10: the first, of 100.
            relay = outbox.OutboxRelay(pool, producer, names, "relaysvc", batch_size=10)
            assert await relay.publish_pending(conn) == outbox.MAX_EVENTS_PER_ROW
            assert await relay.publish_pending(conn) == 3 + 1 + 2
            assert await relay.publish_pending(conn) == 0
            assert await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
            assert published(topics.TRACKING_LOCATIONS) - published_before == len(events) - 1

        locations = await read_topic(
            kafka_bootstrap, names.physical(topics.TRACKING_LOCATIONS), until=lambda r: len(r) >= len(events) - 1
        )
        assert [r.event(topics.TRACKING_LOCATIONS).event_id for r in locations] == [
            e.event_id for e in events if isinstance(e, ShipmentLocationUpdated)
        ]
        assert [r.key for r in locations] == [str(SHIPMENT).encode()] * len(run) + [str(other).encode()] * 2
        assert {(r.headers["event_type"], r.headers["correlation_id"]) for r in locations} == {
            ("ShipmentLocationUpdated", "corr")
        }
        assert [r.value for r in locations[:3]] == [e.to_bytes() for e in run[:3]]
        [status] = await read_topic(
            kafka_bootstrap, names.physical(topics.TRACKING_SHIPMENTS), until=lambda r: len(r) >= 1
        )
        assert status.event(topics.TRACKING_SHIPMENTS).event_id == moved.event_id
    finally:
        await producer.stop()
        await pool.close()


def gauge(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_the_backlog_gauges_come_from_the_rows_read_when_they_are_the_whole_backlog(
    database: Any, kafka_bootstrap: str
) -> None:
    names = TopicNames(f"relay-{uuid.uuid4().hex[:8]}.")
    await ensure_topics(kafka_bootstrap, [names.physical(topics.TRACKING_SHIPMENTS)], partitions=1)
    dsn = await database.provision("backlogsvc")
    pool = await db.create_pool(dsn, "backlogsvc", min_size=1, max_size=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()

    def moved(n: int) -> ShipmentStatusChanged:
        return ShipmentStatusChanged(
            producer="tracking",
            correlation_id=f"corr-{n}",
            shipment_id=uuid.uuid4(),
            order_id=ORDER,
            from_status="label_created",
            to_status="in_transit",
        )

    try:
        await db.apply_migrations(pool, "backlogsvc", db.platform_migrations())
        async with pool.acquire() as conn:
            await outbox.enqueue(conn, *(moved(n) for n in range(5)))
            await conn.execute("UPDATE outbox SET created_at = now() - interval '30 seconds' WHERE id = 1")
            # A full batch (2 of 5): the backlog is counted by its own query.
            relay = outbox.OutboxRelay(pool, producer, names, "backlogsvc", batch_size=2)
            assert await relay.publish_pending(conn) == 2
            assert gauge("tweetshop_outbox_backlog") == 5
            assert gauge("tweetshop_outbox_oldest_age_seconds") >= 30
            # Short of a full batch: the 3 rows read are the backlog, and the oldest of them its age.
            relay = outbox.OutboxRelay(pool, producer, names, "backlogsvc", batch_size=10)
            assert await relay.publish_pending(conn) == 3
            assert gauge("tweetshop_outbox_backlog") == 3
            assert gauge("tweetshop_outbox_oldest_age_seconds") < 30
            assert await relay.publish_pending(conn) == 0
            assert gauge("tweetshop_outbox_backlog") == 0
            assert gauge("tweetshop_outbox_oldest_age_seconds") == 0
    finally:
        await producer.stop()
        await pool.close()
