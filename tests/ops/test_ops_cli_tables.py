"""The `tweetshop` command's tables of consumer groups and read models are what the services run, and the
AsyncAPI documents the services serve are the checked-in contract.

The groups are declared once (tweetshop_contracts.system); each service's main.py only maps them to handlers.
Here each service's app is built (nothing starts, nothing connects) and what its runtime would subscribe is
compared with the CLI's tables: same group ids, topics, fetch settings, and the handler `tweetshop replay` uses.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tweetshop_cli.groups import READ_MODELS, SUBSCRIPTIONS
from tweetshop_contracts.system import SYSTEM
from tweetshop_contracts.topology import TOPICS
from tweetshop_platform.asyncapi import install_asyncapi
from tweetshop_platform.lag import PartitionLag
from tweetshop_platform.runtime import ServiceRuntime

ROOT = Path(__file__).resolve().parents[2]
SERVICES = tuple(s.name for s in SYSTEM.with_kafka())


def built_runtime(service: str, monkeypatch: pytest.MonkeyPatch) -> ServiceRuntime:
    """The runtime ``create_app`` of ``service`` builds (not started: nothing connects)."""
    for name, value in {
        "TWEETSHOP_ENVIRONMENT": "development",
        "TWEETSHOP_DATABASE_URL": f"postgresql://{service}:unused@127.0.0.1:1/tweetshop",
        "TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "TWEETSHOP_STRIPE_API_KEY": "sk_test_tables",
        "TWEETSHOP_STRIPE_WEBHOOK_SECRET": "whsec_tables",
    }.items():
        monkeypatch.setenv(name, value)
    declared = SYSTEM.service(service)
    module_name, _, class_name = declared.settings.partition(":")
    settings = getattr(importlib.import_module(module_name), class_name)()
    app = importlib.import_module(f"{declared.package}.main").create_app(settings)
    runtime = app.state.runtime
    assert isinstance(runtime, ServiceRuntime)
    return runtime


@pytest.mark.parametrize("service", SERVICES)
def test_the_group_table_lists_exactly_the_subscriptions_each_service_runs(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = built_runtime(service, monkeypatch)
    runtime.check_declaration()  # what start() refuses first
    in_code = {(sub.group_id, sub.topic) for sub in runtime._subscriptions}
    in_table = {(sub.group, sub.topic) for sub in SUBSCRIPTIONS if sub.service == service}
    assert in_table == in_code
    assert set(runtime.produces) == {spec.name for spec in TOPICS if spec.producer == service}
    for sub in SUBSCRIPTIONS:
        consumers = {c.service for spec in TOPICS if spec.name == sub.topic for c in spec.consumers if not c.fan_out}
        assert sub.service in consumers, f"docs/topics.md does not list {sub.service} as a consumer of {sub.topic}"
    # Read models wait longer per fetch: exactly the groups the declaration marks.
    relaxed = {f"{service}.{g.name}" for g in SYSTEM.service(service).reliable_groups if g.read_model}
    assert {sub.group_id for sub in runtime._subscriptions if sub.read_model} == relaxed


@pytest.mark.parametrize("service", SERVICES)
def test_each_read_model_is_rebuilt_by_the_handler_of_the_subscription_that_keeps_it(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = built_runtime(service, monkeypatch)
    in_code = {
        sub.group_id: (sub.topic, f"{sub.handler.__module__}:{sub.handler.__name__}") for sub in runtime._subscriptions
    }
    for model in READ_MODELS.values():
        if model.service != service:
            continue
        assert in_code.get(model.group) == (model.topic, model.handler), model.name
        assert model.group.startswith(f"{model.service}.")


def test_trackings_live_view_is_the_declared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracking.config import TrackingSettings

    live = SYSTEM.service("tracking").live_views
    assert [g.name for g in live] == ["live"]
    assert TrackingSettings.model_fields["live_group_prefix"].default == SYSTEM.service("tracking").group_id("live")
    assert built_runtime("tracking", monkeypatch).live_view("live").topics == live[0].topics


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
