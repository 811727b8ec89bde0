"""A sixth service, walked through the one declaration (docs/adding-a-service.md): declared once, it appears in
every derived table (the runtime's subscriptions and topics, the CLI's groups and read models, the ACLs and the
provisioning script, the AsyncAPI documents, the topic specs), and the runtime refuses wiring that differs.

Nothing starts: "returns" is a throw-away service that owns ``returns.requests.v1`` and reads
``checkout.orders.v1``.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import asyncpg
import pytest
from pydantic import Field
from tweetshop_cli import acls
from tweetshop_cli.acls import allowed, principal
from tweetshop_cli.groups import read_models, subscriptions
from tweetshop_contracts import EVENT_TYPES, Envelope, schema_export, topics
from tweetshop_contracts.system import (
    DAY_MS,
    DLQ_CONFIG,
    SYSTEM,
    Group,
    Reads,
    Rebuild,
    Service,
    System,
    Topic,
    TopicConfig,
)
from tweetshop_platform.asyncapi import service_document
from tweetshop_platform.runtime import DeclarationMismatch, ServiceRuntime, plan_subscriptions
from tweetshop_platform.settings import ServiceSettings

RETURNS_TOPIC = "returns.requests.v1"


class ReturnRequested(Envelope):
    """A buyer asked to send an order back (a throw-away event of the test)."""

    TOPIC = RETURNS_TOPIC
    KEY_FIELD = "order_id"
    event_type: Literal["ReturnRequested"] = "ReturnRequested"
    order_id: uuid.UUID
    reason: str = Field(max_length=500)


async def on_order_event(conn: asyncpg.Connection, event: Envelope) -> None:
    """checkout.orders.v1 → the orders a return may be asked for (the test's handler)."""


RETURNS = Service(
    "returns",
    port=8005,
    package=__name__,  # this module stands in for the service's package: its handler lives here
    settings="returns.config:ReturnsSettings",
    owns=(
        Topic(
            RETURNS_TOPIC,
            summary="Returns buyers asked for.",
            retention="At least 7 days: enough to catch up after an outage.",
            config=TopicConfig(retention_ms=7 * DAY_MS),
        ),
    ),
    groups=(
        Group(
            "orders",
            (Reads(topics.CHECKOUT_ORDERS, "knows which orders were paid, so a return can be asked for"),),
            read_model=True,
            rebuild=Rebuild(("orders",), f"{__name__}:on_order_event", "paid orders a return may be asked for"),
        ),
    ),
)


@pytest.fixture(scope="module")
def system() -> System:
    return System((*SYSTEM.services, RETURNS), event_types=(*EVENT_TYPES, ReturnRequested))


def test_the_topic_specs_include_its_topic_and_its_consumption(system: System) -> None:
    spec = next(s for s in system.topic_specs() if s.name == RETURNS_TOPIC)
    assert spec.producer == "returns" and spec.consumers == ()
    assert spec.config.kafka_configs() == {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)}
    assert system.events_of(RETURNS_TOPIC) == (ReturnRequested,)
    orders = next(s for s in system.topic_specs() if s.name == topics.CHECKOUT_ORDERS)
    assert [(c.service, c.group) for c in orders.consumers] == [
        ("catalog", "orders"),
        ("tracking", "orders"),
        ("returns", "orders"),
    ]
    assert system.config(topics.dlq_topic(topics.CHECKOUT_ORDERS)) == DLQ_CONFIG


def test_the_runtime_subscribes_the_declared_group_with_its_handler(system: System) -> None:
    (planned,) = plan_subscriptions(system.service("returns"), {"orders": on_order_event})
    assert (planned.group, planned.topic, planned.handler, planned.read_model) == (
        "orders",
        topics.CHECKOUT_ORDERS,
        on_order_event,
        True,
    )
    runtime = ServiceRuntime(
        ServiceSettings(service_name="returns", topic_namespace="t1."), package="returns", system=system
    )
    assert runtime.produces == (RETURNS_TOPIC,)
    runtime.subscribe_declared({"orders": on_order_event})
    runtime.check_declaration()
    assert [(s.group_id, s.topic, s.read_model) for s in runtime._subscriptions] == [
        ("t1.returns.orders", topics.CHECKOUT_ORDERS, True)
    ]
    configs, replicas = runtime._topic_settings(RETURNS_TOPIC)
    assert configs == {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS)} and replicas == 3
    assert runtime._topic_settings(topics.dlq_topic(topics.CHECKOUT_ORDERS))[0] == DLQ_CONFIG.kafka_configs()


async def _other_handler(conn: asyncpg.Connection, event: Envelope) -> None:
    """Not the handler the read model names."""


@pytest.mark.parametrize(
    ("handlers", "complaint"),
    [
        ({}, r"no handler for the declared group returns\.orders"),
        ({"orders": on_order_event, "refunds": on_order_event}, r"returns\.refunds, a group the system does not"),
        ({"orders": _other_handler}, "its read model is rebuilt by"),
    ],
    ids=["a declared group without a handler", "a handler of an undeclared group", "not the rebuild handler"],
)
def test_the_runtime_refuses_wiring_that_differs_from_the_declaration(
    system: System, handlers: dict[str, Any], complaint: str
) -> None:
    runtime = ServiceRuntime(ServiceSettings(service_name="returns"), package="returns", system=system)
    with pytest.raises(DeclarationMismatch, match=complaint):
        runtime.subscribe_declared(handlers)


def test_a_runtime_that_subscribes_nothing_does_not_start(system: System) -> None:
    runtime = ServiceRuntime(ServiceSettings(service_name="returns"), package="returns", system=system)
    with pytest.raises(DeclarationMismatch, match=r"declared but not subscribed: returns\.orders"):
        runtime.check_declaration()
    with pytest.raises(DeclarationMismatch, match="owns"):
        ServiceRuntime(ServiceSettings(service_name="returns"), package="returns", produces=("x.y.v1",), system=system)


def test_the_cli_knows_its_group_and_read_model(system: System) -> None:
    assert [(s.group, s.topic) for s in subscriptions(system) if s.service == "returns"] == [
        ("returns.orders", topics.CHECKOUT_ORDERS)
    ]
    model = read_models(system)["returns.orders"]
    assert (model.service, model.topic, model.tables, model.handler) == (
        "returns",
        topics.CHECKOUT_ORDERS,
        ("orders",),
        f"{__name__}:on_order_event",
    )


def test_the_acls_let_it_write_its_topic_and_read_what_it_consumes(system: System) -> None:
    granted = acls.derive(system=system)
    returns = principal("returns")
    assert "returns" in acls.services(system)
    assert allowed(granted, returns, "WRITE", "TOPIC", RETURNS_TOPIC)
    assert allowed(granted, returns, "READ", "TOPIC", topics.CHECKOUT_ORDERS)
    assert allowed(granted, returns, "WRITE", "TOPIC", topics.dlq_topic(topics.CHECKOUT_ORDERS))
    assert allowed(granted, returns, "READ", "GROUP", "returns.orders")
    assert not allowed(granted, returns, "WRITE", "TOPIC", topics.CHECKOUT_ORDERS)
    assert not allowed(granted, principal("checkout"), "WRITE", "TOPIC", RETURNS_TOPIC)
    assert allowed(granted, principal(acls.OPERATOR), "READ", "TOPIC", RETURNS_TOPIC)
    script = acls.script(system=system)
    assert f"--topic {RETURNS_TOPIC} " in script and "retention.ms=604800000" in script
    assert "returns" in script.split('TWEETSHOP_KAFKA_USERS="', 1)[1].split('"', 1)[0].split()


def test_the_asyncapi_documents_have_its_channel_and_operations(system: System) -> None:
    doc = schema_export.asyncapi_document({}, system=system)
    channel = doc["channels"][schema_export.channel_id(RETURNS_TOPIC)]
    assert channel["address"] == RETURNS_TOPIC
    assert channel["bindings"]["kafka"]["topicConfiguration"] == {
        "cleanup.policy": ["delete"],
        "retention.ms": 7 * DAY_MS,
    }
    assert "ReturnRequested" in doc["components"]["messages"]
    operations = {"returnsSendsReturnsRequestsV1", "returnsReceivesCheckoutOrdersV1", "returnsSendsCheckoutOrdersV1Dlq"}
    assert operations <= set(doc["operations"])
    own = service_document("returns", doc)
    assert {c["address"] for c in own["channels"].values()} == {
        RETURNS_TOPIC,
        topics.CHECKOUT_ORDERS,
        topics.dlq_topic(topics.CHECKOUT_ORDERS),
    }
