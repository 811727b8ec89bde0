"""The one declaration of the system (tweetshop_contracts.system) is consistent, keeps the public names of contract
v1, and gives every topic the settings docs/topics.md promises."""

from __future__ import annotations

import dataclasses

import pytest
from tweetshop_contracts import EVENT_TYPES, topics, topology
from tweetshop_contracts.system import (
    DAY_MS,
    DLQ_CONFIG,
    FOREVER,
    SYSTEM,
    DeclarationError,
    Group,
    Reads,
    Service,
    System,
    Topic,
    TopicConfig,
)


def test_the_public_names_are_those_of_contract_v1() -> None:
    assert SYSTEM.topic_names() == topics.ALL_TOPICS
    assert SYSTEM.names == ("catalog", "feed", "checkout", "tracking", "webapp")
    groups = {SYSTEM.service(s.name).group_id(g.name) for s in SYSTEM.services for g in s.groups}
    assert groups == {
        "catalog.orders",
        "catalog.allocations",
        "feed.merchants",
        "feed.products",
        "feed.buyers",
        "checkout.merchants",
        "checkout.products",
        "checkout.tweets",
        "checkout.reservations",
        "checkout.allocations",
        "checkout.shipments",
        "tracking.orders",
        "tracking.live",
    }
    assert {e for t in SYSTEM.topic_names() for e in SYSTEM.events_of(t)} == set(EVENT_TYPES)


def test_the_contract_ports_and_resources() -> None:
    assert SYSTEM.ports() == {"catalog": 8001, "feed": 8002, "checkout": 8003, "tracking": 8004, "webapp": 8000}
    assert [s.name for s in SYSTEM.with_database()] == ["catalog", "feed", "checkout", "tracking"]
    assert [s.name for s in SYSTEM.services if s.stripe] == ["checkout"]
    assert [s.name for s in SYSTEM.with_kafka()] == ["catalog", "feed", "checkout", "tracking"]


def test_the_topology_is_derived_from_the_declaration() -> None:
    assert topology.TOPICS == SYSTEM.topic_specs()
    for spec in topology.TOPICS:
        assert spec.producer == SYSTEM.owner(spec.name).name
        assert spec.name.startswith(spec.producer + ".")


def test_what_the_documents_promise_is_what_topics_are_created_with() -> None:
    for topic in SYSTEM.topics():
        forever = topic.retention.startswith("Forever")
        assert (topic.config.retention_ms == FOREVER) is forever, topic.name
        if "7 days" in topic.retention:
            assert topic.config.retention_ms == 7 * DAY_MS, topic.name
        if "24 hours" in topic.retention:
            assert topic.config.retention_ms == DAY_MS, topic.name
    assert DLQ_CONFIG.retention_ms == 30 * DAY_MS and topology.DLQ_RETENTION.startswith("30 days")
    for dlq in SYSTEM.dead_letter_topics():
        assert SYSTEM.config(dlq) == DLQ_CONFIG


def test_no_topic_is_compacted_since_it_would_lose_what_readers_need() -> None:
    # catalog.merchants.v1: a key rotation would remove the registration (handle, name). catalog.products.v1:
    # an at-least-once re-publish can put an older version last, and compaction keeps the last, not the newest.
    assert {t.config.cleanup_policy for t in SYSTEM.topics()} == {"delete"}


def test_personal_data_ages_out_of_kafka() -> None:
    for name in (topics.CHECKOUT_ORDERS, topics.TRACKING_SHIPMENTS, topics.TRACKING_LOCATIONS):
        assert SYSTEM.topic(name).config.retention_ms > 0, name
    assert DLQ_CONFIG.retention_ms > 0


def test_kafka_configs_are_spelled_as_the_broker_spells_them() -> None:
    assert TopicConfig(retention_ms=FOREVER).kafka_configs() == {"cleanup.policy": "delete", "retention.ms": "-1"}
    assert TopicConfig(DAY_MS, "compact").kafka_configs() == {"cleanup.policy": "compact", "retention.ms": "86400000"}


def _replace_service(name: str, **changes: object) -> tuple[Service, ...]:
    return tuple(dataclasses.replace(s, **changes) if s.name == name else s for s in SYSTEM.services)


@pytest.mark.parametrize(
    ("services", "complaint"),
    [
        pytest.param(_replace_service("feed", port=8001), "share port 8001", id="two services on one port"),
        pytest.param((*SYSTEM.services, SYSTEM.service("feed")), "declared twice", id="a service twice"),
        pytest.param(
            _replace_service(
                "feed", groups=(Group("orders", (Reads("nobody.things.v1", "reads a topic nobody owns"),)),)
            ),
            "which no service owns",
            id="a group reading an undeclared topic",
        ),
        pytest.param(
            _replace_service(
                "feed",
                groups=(
                    Group(
                        "both",
                        (Reads(topics.CATALOG_PRODUCTS, "one"), Reads(topics.CATALOG_MERCHANTS, "two")),
                    ),
                ),
            ),
            "reads exactly one topic",
            id="a reliable group on two topics",
        ),
        pytest.param(
            _replace_service("feed", owns=()),
            "which no service owns",
            id="an event whose topic nobody owns",
        ),
        pytest.param(
            _replace_service("webapp", groups=(Group("orders", (Reads(topics.CHECKOUT_ORDERS, "x"),)),)),
            "does not use Kafka",
            id="a consumer without Kafka",
        ),
        pytest.param(
            _replace_service(
                "catalog",
                owns=(
                    *SYSTEM.service("catalog").owns,
                    Topic("catalog.empty.v1", "nothing", "none", TopicConfig(DAY_MS)),
                ),
            ),
            "has no event type",
            id="a topic without events",
        ),
        pytest.param(
            _replace_service(
                "feed",
                owns=(dataclasses.replace(SYSTEM.topic(topics.FEED_BUYABLE_TWEETS), name="tweets.buyable.v1"),),
            ),
            "<owner>.<name>.v<N>",
            id="a topic named after another owner",
        ),
        pytest.param(
            _replace_service(
                "catalog",
                groups=tuple(
                    dataclasses.replace(g, patient=True) if g.purchase_path else g
                    for g in SYSTEM.service("catalog").groups
                ),
            ),
            "is patient",
            id="a patient group on a purchase's path",
        ),
    ],
)
def test_a_contradiction_in_the_declaration_is_refused(services: tuple[Service, ...], complaint: str) -> None:
    with pytest.raises(DeclarationError, match=complaint):
        System(services)


def test_the_declaration_is_its_own_check() -> None:
    assert list(SYSTEM.problems()) == []
