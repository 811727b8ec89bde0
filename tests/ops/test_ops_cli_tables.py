"""The `tweetshop` command's tables of consumer groups and read models match what the services subscribe,
and the AsyncAPI documents the services serve are the checked-in contract."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tweetshop_cli.groups import READ_MODELS, SUBSCRIPTIONS
from tweetshop_contracts import topics
from tweetshop_contracts.topology import TOPICS
from tweetshop_platform.asyncapi import install_asyncapi
from tweetshop_platform.lag import PartitionLag

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("catalog", "feed", "checkout", "tracking")
TOPIC_CONSTANTS = {name: value for name, value in vars(topics).items() if name.isupper() and isinstance(value, str)}


def _subscriptions_in_code(service: str) -> set[tuple[str, str, str]]:
    """(group, topic, handler) of every `runtime.subscribe(topics.X, handlers.Y, group="z")` in main.py."""
    tree = ast.parse((ROOT / "services" / service / "src" / service / "main.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "subscribe"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "runtime"
        ):
            topic, handler = node.args[0], node.args[1]
            assert isinstance(topic, ast.Attribute) and isinstance(handler, ast.Attribute), ast.dump(node)
            group = next(k.value for k in node.keywords if k.arg == "group")
            assert isinstance(group, ast.Constant)
            found.add((f"{service}.{group.value}", TOPIC_CONSTANTS[topic.attr], f"{service}.handlers:{handler.attr}"))
    return found


def test_the_group_table_lists_exactly_the_subscriptions_of_the_services() -> None:
    in_code = {(group, topic) for s in SERVICES for group, topic, _ in _subscriptions_in_code(s)}
    in_table = {(sub.group, sub.topic) for sub in SUBSCRIPTIONS}
    assert in_table == in_code, "update tweetshop_cli/groups.py SUBSCRIPTIONS to match the services' main.py"
    for sub in SUBSCRIPTIONS:
        consumers = {c.service for spec in TOPICS if spec.name == sub.topic for c in spec.consumers if not c.fan_out}
        assert sub.service in consumers, f"docs/topics.md does not list {sub.service} as a consumer of {sub.topic}"


def test_each_read_model_is_rebuilt_by_the_handler_of_the_subscription_that_keeps_it() -> None:
    in_code = {group: (topic, handler) for s in SERVICES for group, topic, handler in _subscriptions_in_code(s)}
    for model in READ_MODELS.values():
        assert in_code.get(model.group) == (model.topic, model.handler), model.name
        assert model.group.startswith(f"{model.service}.")


@pytest.mark.parametrize(
    ("committed", "expected"),
    [(None, 7), (3, 7), (8, 2), (10, 0)],
    ids=["never committed: from the beginning", "before the retained start", "behind", "caught up"],
)
def test_lag_counts_from_where_the_group_resumes(committed: int | None, expected: int) -> None:
    assert PartitionLag("g", "t", 0, beginning=3, end=10, committed=committed).lag == expected


async def _served(service: str, path: str) -> Any:
    app = FastAPI()
    install_asyncapi(app, service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        response = await client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


async def test_every_service_serves_the_checked_in_system_asyncapi_document() -> None:
    checked_in = json.loads((ROOT / "docs" / "asyncapi.json").read_text(encoding="utf-8"))
    assert await _served("feed", "/asyncapi/system.json") == checked_in


def _resolves(doc: Any, ref: str) -> bool:
    node = doc
    for part in ref.removeprefix("#/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


@pytest.mark.parametrize("service", SERVICES)
async def test_each_service_serves_an_asyncapi_document_of_the_topics_it_takes_part_in(service: str) -> None:
    doc = await _served(service, "/asyncapi.json")
    assert doc["asyncapi"] == "3.0.0" and doc["id"] == f"urn:tweetshop:{service}"
    addresses = {channel["address"] for channel in doc["channels"].values()}
    expected = {spec.name for spec in TOPICS if spec.producer == service}
    for spec in TOPICS:
        for consumer in spec.consumers:
            if consumer.service == service:
                expected.add(spec.name)
                if not consumer.fan_out:
                    expected.add(f"{spec.name}.dlq")
    assert addresses == expected
    assert all(op_id.startswith(service) for op_id in doc["operations"])
    dangling = [ref for ref in _refs(doc) if not _resolves(doc, ref)]
    assert not dangling, f"references to parts left out: {dangling}"
