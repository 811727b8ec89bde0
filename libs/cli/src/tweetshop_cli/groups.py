"""Our consumer groups and the read models that can be rebuilt from topics.

Both are read from the one declaration of the system (``tweetshop_contracts.system``), which the services'
runtime subscribes from too (``ServiceRuntime.subscribe_declared``). Group ids are ``<namespace><service>.<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tweetshop_contracts.system import SYSTEM, System


@dataclass(frozen=True)
class Subscription:
    """One reliable consumer: a service's group on one topic."""

    service: str
    group: str  # without the namespace
    topic: str


@dataclass(frozen=True)
class ReadModel:
    """A table a service keeps only from one topic, so it can be dropped and rebuilt from that topic."""

    name: str
    service: str  # also its Postgres schema
    topic: str
    group: str  # the subscription that keeps it (its inbox rows are replaced too)
    tables: tuple[str, ...]
    handler: str  # "module:function", the service's own handler of that subscription
    description: str


def subscriptions(system: System = SYSTEM) -> tuple[Subscription, ...]:
    """Every reliable consumer group of ``system`` on each topic it reads (live views have no fixed group)."""
    return tuple(
        Subscription(service.name, service.group_id(group.name), topic)
        for service in system.services
        for group in service.reliable_groups
        for topic in group.topics
    )


def read_models(system: System = SYSTEM) -> dict[str, ReadModel]:
    """Every read model of ``system`` by name (``<service>.<group>``)."""
    models = {}
    for service in system.services:
        for group in service.reliable_groups:
            if group.rebuild is None:
                continue
            name = service.group_id(group.name)
            (topic,) = group.topics
            models[name] = ReadModel(
                name,
                service.name,
                topic,
                name,
                group.rebuild.tables,
                group.rebuild.handler,
                group.rebuild.description,
            )
    return models


SUBSCRIPTIONS: tuple[Subscription, ...] = subscriptions()
READ_MODELS: dict[str, ReadModel] = read_models()
