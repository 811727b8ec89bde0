"""The baseline: the same work as tracking's ingest, hand-written straight on asyncpg and aiokafka, in one process.

Per batch: one transaction inserts the points (one INSERT over unnest'ed arrays, as
tracking does), then every point is produced to a topic keyed by shipment and the
batch counts as persisted+published once the broker acknowledged them all. A
consumer in the same process reads the topic and hands each point of a watched
shipment to that watcher's asyncio queue. No HTTP, no validation, no outbox, no
pydantic: what the parts underneath allow.

Started by run.py as ``python -m bench.locations.baseline '<json config>'``; prints one JSON result per rate.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common.gc_settings import collect_like_the_services, freeze_what_started
from bench.locations.load import Clock, CpuMeter, Deliveries, latency_summary, moment, open_loop, saturated


async def _ensure_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def run(config: dict[str, Any]) -> None:
    bootstrap, topic = config["bootstrap"], config["topic"]
    shipments = [str(uuid.uuid4()) for _ in range(config["shipments"])]
    watched = shipments[: config["watchers"]]
    meter = CpuMeter({"baseline": os.getpid(), **config["pids"]})
    collect_like_the_services()

    pool = await asyncpg.create_pool(config["dsn"], min_size=2, max_size=10)
    assert pool is not None
    await pool.execute(
        """CREATE TABLE IF NOT EXISTS baseline_points (
               shipment_id UUID NOT NULL, recorded_at TIMESTAMPTZ NOT NULL,
               lat DOUBLE PRECISION NOT NULL, lon DOUBLE PRECISION NOT NULL,
               speed DOUBLE PRECISION, heading DOUBLE PRECISION, accuracy DOUBLE PRECISION,
               received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
               PRIMARY KEY (shipment_id, recorded_at))"""
    )
    await _ensure_topic(bootstrap, topic, config["partitions"])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    # Assigned partitions, read from their current end: no group join, like a process's own live feed.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=config["fetch_max_wait_ms"],
    )
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in range(config["partitions"])]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)

    deliveries = Deliveries()
    queues: dict[bytes, asyncio.Queue[tuple[str, int]]] = {}
    for shipment_id in watched:
        deliveries.watch(shipment_id)
        queues[shipment_id.encode()] = asyncio.Queue()

    async def consume() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            for records in batch.values():
                for record in records:
                    queue = queues.get(record.key or b"")
                    if queue is not None:
                        # Decoded like a watcher's update would be.
                        event = json.loads(record.value or b"{}")
                        queue.put_nowait((event["shipment_id"], event["micros"]))

    async def watcher(shipment_id: str, queue: asyncio.Queue[tuple[str, int]]) -> None:
        while True:
            shipment, micros = await queue.get()
            deliveries.seen(shipment, micros, time.monotonic())

    freeze_what_started()
    clock = Clock()
    tasks = [asyncio.create_task(consume())]
    tasks += [asyncio.create_task(watcher(s, queues[s.encode()])) for s in watched]
    batch_size = config["batch"]
    try:
        for rate in config["rates"]:
            deliveries.reset()
            meter.start()
            first_micros = clock.next_us()
            published = 0
            last_ack = 0.0
            errors = 0

            async def send(index: int, scheduled: float, *, rate_batch: int = batch_size) -> None:
                nonlocal published, last_ack, errors
                shipment_id = shipments[index % len(shipments)]
                micros = [clock.next_us() for _ in range(rate_batch)]
                for m in micros:
                    deliveries.expect(shipment_id, m, scheduled)
                sid = uuid.UUID(shipment_id)
                recorded = [moment(m) for m in micros]
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        await conn.execute(
                            """INSERT INTO baseline_points
                                   (shipment_id, recorded_at, lat, lon, speed, heading, accuracy)
                               SELECT $1, t.recorded_at, t.lat, t.lon, t.speed, t.heading, t.accuracy
                               FROM unnest($2::timestamptz[], $3::float8[], $4::float8[], $5::float8[],
                                           $6::float8[], $7::float8[])
                                    AS t (recorded_at, lat, lon, speed, heading, accuracy)
                               ON CONFLICT (shipment_id, recorded_at) DO NOTHING""",
                            sid,
                            recorded,
                            [48.9] * rate_batch,
                            [2.35] * rate_batch,
                            [9.5] * rate_batch,
                            [180.0] * rate_batch,
                            [8.0] * rate_batch,
                        )
                    key = shipment_id.encode()
                    futures = [
                        await producer.send(
                            topic,
                            json.dumps(
                                {
                                    "event_type": "ShipmentLocationUpdated",
                                    "event_id": str(uuid.uuid4()),
                                    "shipment_id": shipment_id,
                                    "lat": 48.9,
                                    "lon": 2.35,
                                    "recorded_at": recorded[i].isoformat(),
                                    "speed": 9.5,
                                    "heading": 180.0,
                                    "accuracy": 8.0,
                                    "micros": m,
                                }
                            ).encode(),
                            key=key,
                        )
                        for i, m in enumerate(micros)
                    ]
                    await asyncio.gather(*futures)
                    published += rate_batch
                    last_ack = time.monotonic()
                except Exception:
                    errors += 1

            started = time.monotonic()
            batches = max(1, round(rate * config["step_s"] / batch_size))
            lateness = await open_loop(batches, batch_size / rate, send, max_in_flight=config["max_in_flight"])
            deadline = time.monotonic() + config["drain_timeout_s"]
            while deliveries.outstanding and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            cpu = meter.stop()
            persisted = await pool.fetchval(
                "SELECT count(*) FROM baseline_points WHERE recorded_at > $1 AND recorded_at <= $2",
                moment(first_micros),
                moment(clock.next_us()),
            )
            elapsed = max(1e-9, last_ack - started)
            result = {
                "pipeline": "baseline",
                "watchers": config["watchers"],
                "shipments": len(shipments),
                "offered_pps": rate,
                "sent": batches * batch_size,
                "persisted": int(persisted),
                "published": published,
                "expected_deliveries": deliveries.expected_count,
                "delivered": len(deliveries.latencies),
                "lost": deliveries.outstanding,
                "errors": errors,
                "throughput_pps": round(published / elapsed, 1),
                "steal_share": meter.steal_share,
                "generator_lateness_ms": round(lateness * 1000, 1),
                "latency": latency_summary(deliveries.latencies),
                "cores": cpu,
            }
            print(json.dumps(result), flush=True)
            if saturated(result):
                break  # higher rates only wait out their drain
    finally:
        for task in tasks:
            task.cancel()
        await consumer.stop()
        await producer.stop()
        await pool.close()


if __name__ == "__main__":
    asyncio.run(run(json.loads(sys.argv[1])))
