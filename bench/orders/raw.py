"""The parts underneath on their own: raw broker produce/consume, raw Postgres commits, localstripe's ceiling."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import stripe
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tweetshop_devstack.testing import create_database, dsn_with_database
from tweetshop_platform.kafka import ensure_topics

MESSAGE_BYTES = 400  # about the size of one of our JSON events


async def broker_rate(bootstrap: str, *, messages: int = 100_000, partitions: int = 6) -> dict[str, Any]:
    """Messages/s aiokafka produces (acks=all, batched by the client) and then consumes from one fresh topic."""
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [topic], partitions)
    value = b"x" * MESSAGE_BYTES
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, value, key=str(i % 1000).encode()) for i in range(messages)]
        await asyncio.gather(*futures)
        produce_s = time.perf_counter() - started
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        read = 0
        started = time.perf_counter()
        deadline = started + 120
        while read < messages and time.perf_counter() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            read += sum(len(ms) for ms in batch.values())
        consume_s = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {
        "messages": messages,
        "message_bytes": MESSAGE_BYTES,
        "produce_per_s": round(messages / produce_s),
        "consume_per_s": round(read / consume_s),
        "consumed": read,
    }


async def postgres_commit_rate(admin_dsn: str, *, concurrency: int = 16, seconds: float = 5.0) -> dict[str, Any]:
    """Small single-row INSERT transactions per second at ``concurrency`` (the server's durability as configured)."""
    database = f"bench_raw_{uuid.uuid4().hex[:8]}"
    await create_database(admin_dsn, database)
    pool = await asyncpg.create_pool(dsn_with_database(admin_dsn, database), min_size=concurrency, max_size=concurrency)
    assert pool is not None
    try:
        await pool.execute("CREATE TABLE t (id uuid PRIMARY KEY, payload jsonb NOT NULL)")
        fsync = await pool.fetchval("SHOW fsync")
        commits = 0
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal commits
            while time.perf_counter() < stop_at:
                async with pool.acquire() as c, c.transaction():
                    await c.execute("INSERT INTO t VALUES ($1, '{\"a\": 1}')", uuid.uuid4())
                commits += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    return {"concurrency": concurrency, "commits_per_s": round(commits / elapsed), "fsync": fsync}


async def localstripe_ceiling(base_url: str, *, seconds: float = 6.0) -> dict[str, Any]:
    """PaymentIntent create+confirm per second through the stripe library, at concurrency 1 and 16."""
    client = stripe.StripeClient(
        "sk_test_bench", base_addresses={"api": base_url}, http_client=stripe.HTTPXClient(timeout=30)
    )
    out: dict[str, Any] = {}
    for concurrency in (1, 16):
        done = 0
        errors = 0

        async def worker(stop_at: float) -> None:
            nonlocal done, errors
            while time.perf_counter() < stop_at:
                try:
                    await client.v1.payment_intents.create_async(
                        {  # type: ignore[typeddict-unknown-key]  # localstripe knows only the older parameter
                            "amount": 1500,
                            "currency": "eur",
                            "payment_method": "pm_card_visa",
                            "payment_method_types": ["card"],
                            "confirm": True,
                        }
                    )
                    done += 1
                except stripe.StripeError:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(started + seconds) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        out[f"concurrency_{concurrency}_per_s"] = round(done / elapsed, 1)
        out[f"concurrency_{concurrency}_errors"] = errors
    return out


async def _read_stamps(consumer: AIOKafkaConsumer, latencies: list[float], n: int) -> None:
    while len(latencies) < n:
        batch = await consumer.getmany(timeout_ms=1000)
        now = time.monotonic()
        latencies.extend(now - float(m.value or b"0") for ms in batch.values() for m in ms)


async def hop_latency(
    bootstrap: str, *, fetch_waits_ms: tuple[int, ...] = (500, 100, 20), messages: int = 60
) -> dict[str, Any]:
    """Produce → consume latency of one message at a time, by the consumer's ``fetch_max_wait_ms``.

    aiokafka waits up to ``fetch_max_wait_ms`` (500 ms by default) for a fetch to fill; a broker that does not
    answer a waiting fetch as soon as data arrives makes every hop of a pipeline pay part of that wait.
    """
    topic = f"bench-hop-{uuid.uuid4().hex[:8]}"
    partitions = 6
    await ensure_topics(bootstrap, [topic], partitions)
    out: dict[str, Any] = {}
    for wait_ms in fetch_waits_ms:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=wait_ms, enable_auto_commit=False)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await consumer.start()
        await producer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            latencies: list[float] = []
            reader = asyncio.create_task(_read_stamps(consumer, latencies, messages))
            await asyncio.sleep(0.5)
            for i in range(messages):
                await producer.send_and_wait(topic, str(time.monotonic()).encode(), key=str(i).encode())
                await asyncio.sleep(0.03)
            await asyncio.wait_for(reader, 30)
        finally:
            await producer.stop()
            await consumer.stop()
        ordered = sorted(latencies)
        out[f"fetch_max_wait_{wait_ms}ms"] = {
            "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1),
            "p95_ms": round(ordered[int(len(ordered) * 0.95)] * 1000, 1),
        }
    return out
