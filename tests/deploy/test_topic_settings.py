"""Topics are created with the settings the system declares (tweetshop_contracts.system): retention and cleanup
policy as topic configs, a replication factor capped by the brokers in the cluster; a broker that refuses the
configs gets the topic without them, and a warning says so.

The admin client is a stand-in here (no broker); the last test does the same against the session's broker.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from aiokafka.admin import NewTopic
from tweetshop_contracts import topics
from tweetshop_contracts.system import DLQ_CONFIG, SYSTEM
from tweetshop_platform import kafka
from tweetshop_platform.runtime import ServiceRuntime
from tweetshop_platform.settings import ServiceSettings

INVALID_CONFIG = 40
TOPIC_ALREADY_EXISTS = 36


@dataclass
class FakeAdmin:
    """What ensure_topics asks of AIOKafkaAdminClient, recorded; ``refuse_configs``: answer INVALID_CONFIG."""

    brokers: int = 1
    refuse_configs: bool = False
    existing: set[str] = field(default_factory=set)
    requests: list[list[NewTopic]] = field(default_factory=list)

    def __call__(self, **_: Any) -> FakeAdmin:
        return self

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return sorted(self.existing)

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": i} for i in range(self.brokers)], "controller_id": 0}

    async def create_topics(self, new_topics: list[NewTopic]) -> Any:
        self.requests.append(new_topics)
        errors = []
        for topic in new_topics:
            if self.refuse_configs and topic.topic_configs:
                errors.append((topic.name, INVALID_CONFIG, "no configs here"))
            elif topic.name in self.existing:
                errors.append((topic.name, TOPIC_ALREADY_EXISTS, "exists"))
            else:
                self.existing.add(topic.name)
                errors.append((topic.name, 0, None))
        return SimpleNamespace(topic_errors=errors)


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAdmin]:
    fake = FakeAdmin()
    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", fake)
    yield fake


async def test_topics_are_created_with_their_configs_and_a_capped_replication_factor(admin: FakeAdmin) -> None:
    admin.brokers = 2
    configs = {"a.b.v1": {"retention.ms": "-1", "cleanup.policy": "delete"}}
    await kafka.ensure_topics("broker:9092", ["a.b.v1", "a.b.v1.dlq"], 6, configs=configs, replication_factor=3)
    (request,) = admin.requests
    by_name = {t.name: t for t in request}
    assert by_name["a.b.v1"].topic_configs == configs["a.b.v1"]
    assert by_name["a.b.v1.dlq"].topic_configs == {}
    assert {t.replication_factor for t in request} == {2}, "never more replicas than brokers"
    assert {t.num_partitions for t in request} == {6}


async def test_a_broker_that_refuses_configs_gets_the_topic_without_them(
    admin: FakeAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin.refuse_configs = True
    # The module's own logger, swapped for one that records (capture_logs and capsys both miss a logger that an
    # earlier test's logging configuration already bound to its own output).
    said = structlog.testing.CapturingLogger()
    monkeypatch.setattr(kafka, "log", structlog.wrap_logger(said, processors=[]))
    await kafka.ensure_topics("broker:9092", ["a.b.v1"], 6, configs={"a.b.v1": {"retention.ms": "-1"}})
    assert [[t.topic_configs for t in request] for request in admin.requests] == [[{"retention.ms": "-1"}], [{}]]
    assert admin.existing == {"a.b.v1"}
    warnings = [call.kwargs["event"] for call in said.calls if call.method_name == "warning"]
    assert any("refused the topic configs" in event for event in warnings)
    assert "topics not created" not in warnings


async def test_existing_topics_are_left_as_they_are(admin: FakeAdmin) -> None:
    admin.existing = {"a.b.v1"}
    await kafka.ensure_topics("broker:9092", ["a.b.v1"], 6, configs={"a.b.v1": {"retention.ms": "-1"}})
    assert admin.requests == []


async def test_a_service_creates_what_it_owns_and_reads_with_the_declared_settings(
    admin: FakeAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ServiceRuntime.start asks for (stopped right after the topics: the database is a stand-in too)."""
    settings = ServiceSettings(
        service_name="tracking", environment="development", topic_namespace="ns.", kafka_topic_partitions=4
    )
    runtime = ServiceRuntime(settings, package="tracking")

    # tracking's own handler (it acts on the types the declaration names; never called here).
    from tracking.handlers import on_order_event

    runtime.subscribe_declared({"orders": on_order_event})

    class Stop(Exception):
        pass

    async def no_pool(*_: Any, **__: Any) -> Any:
        return SimpleNamespace()

    async def no_migrations(*_: Any, **__: Any) -> None:
        pass

    async def stop_after_topics(*_: Any, **__: Any) -> None:
        raise Stop

    monkeypatch.setattr("tweetshop_platform.runtime.db.wait_for_pool", no_pool)
    monkeypatch.setattr("tweetshop_platform.runtime.db.apply_migrations", no_migrations)
    monkeypatch.setattr("tweetshop_platform.runtime.db.load_migrations", lambda *_: [])
    monkeypatch.setattr(runtime, "_start_broker", stop_after_topics)
    thresholds = gc.get_threshold()  # start() sets the service's; this process is not a service
    try:
        with pytest.raises(Stop):
            await runtime.start()
    finally:
        gc.set_threshold(*thresholds)
    created = {t.name: t for request in admin.requests for t in request}
    expected = {topics.TRACKING_SHIPMENTS, topics.TRACKING_LOCATIONS, topics.CHECKOUT_ORDERS}
    expected.add(topics.dlq_topic(topics.CHECKOUT_ORDERS))
    assert set(created) == {f"ns.{name}" for name in expected}
    for name in expected:
        assert created[f"ns.{name}"].topic_configs == SYSTEM.config(name).kafka_configs(), name
        assert created[f"ns.{name}"].num_partitions == 4
        assert created[f"ns.{name}"].replication_factor == 1, "one broker"
    assert created[f"ns.{topics.dlq_topic(topics.CHECKOUT_ORDERS)}"].topic_configs == DLQ_CONFIG.kafka_configs()
    assert created[f"ns.{topics.TRACKING_LOCATIONS}"].topic_configs["retention.ms"] == str(24 * 3600 * 1000)


async def test_the_broker_keeps_the_declared_configs_of_a_topic_a_service_creates(kafka_bootstrap: str) -> None:
    """On the session's broker (Tansu or Apache Kafka): the configs are accepted, stored and described back."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    namespace = f"settings-{uuid.uuid4().hex[:8]}."
    names = {namespace + topics.CATALOG_PRODUCTS: topics.CATALOG_PRODUCTS}
    names[namespace + topics.TRACKING_LOCATIONS] = topics.TRACKING_LOCATIONS
    names[namespace + topics.dlq_topic(topics.CHECKOUT_ORDERS)] = topics.dlq_topic(topics.CHECKOUT_ORDERS)
    configs = {physical: SYSTEM.config(logical).kafka_configs() for physical, logical in names.items()}
    await kafka.ensure_topics(kafka_bootstrap, list(names), 1, configs=configs, replication_factor=3)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    finally:
        await admin.close()
    found: dict[str, dict[str, str]] = {}
    for response in described:
        for _code, _message, _type, name, entries in response.resources:
            found[name] = {entry[0]: entry[1] for entry in entries}
    for physical, wanted in configs.items():
        assert {key: found[physical].get(key) for key in wanted} == wanted, physical
