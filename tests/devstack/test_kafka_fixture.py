"""The session's broker (Tansu when there is neither an env setting nor Docker) carries messages between groups."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def consume(
    bootstrap: str, topic: str, group: str, count: int, timeout: float = 30.0
) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        received: list[tuple[bytes, bytes]] = []
        async with asyncio.timeout(timeout):
            while len(received) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for messages in batches.values():
                    received += [(m.key or b"", m.value or b"") for m in messages]
        await consumer.commit()
        committed = await consumer.committed(TopicPartition(topic, 0))
        assert committed == count, f"group {group} committed offset {committed}, expected {count}"
        return received
    finally:
        await consumer.stop()


async def test_messages_reach_every_consumer_group_in_order(kafka_bootstrap: str, kafka_is_apache: bool) -> None:
    topic = f"devstack.test.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    sent = [(b"order-1", f"event-{i}".encode()) for i in range(5)]
    # Tansu has no InitProducerId: the fixture says whether idempotence may be on.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=kafka_is_apache)
    await producer.start()
    try:
        for key, value in sent:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

    # Concurrently: joining a new group takes Tansu about 5 s.
    first_group, second_group = await asyncio.gather(
        consume(kafka_bootstrap, topic, f"g1-{uuid.uuid4().hex[:8]}", len(sent)),
        consume(kafka_bootstrap, topic, f"g2-{uuid.uuid4().hex[:8]}", len(sent)),
    )

    assert first_group == sent
    assert second_group == sent
