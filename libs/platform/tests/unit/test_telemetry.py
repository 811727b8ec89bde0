"""Tracing (telemetry.py): off by default; on, the context crosses HTTP, the outbox and Kafka headers.

Spans go to the SDK's in-memory exporter (``telemetry.export_to``); the broker is FastStream's in-memory one, the
database and the producer are fakes: what the real ones do is tests/e2e/test_one_purchase_one_trace.py's part.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from faststream.kafka import KafkaBroker, TestKafkaBroker
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tweetshop_contracts import topics
from tweetshop_devstack.testing import order_placed
from tweetshop_platform import telemetry
from tweetshop_platform.consumer import ReliableSubscriber
from tweetshop_platform.http import install_common
from tweetshop_platform.kafka import TopicNames
from tweetshop_platform.outbox import OutboxRelay
from tweetshop_platform.proxies import parse_trusted_proxies
from tweetshop_platform.settings import ServiceSettings

# A W3C traceparent from "upstream": version, trace id, parent span id, sampled.
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.export_to(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        telemetry.export_to(None)


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def hex_parent(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent is not None else None


# --- off by default ----------------------------------------------------------------------------------------------


def test_tracing_is_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(telemetry.TRACING_VARIABLE, raising=False)
    assert ServiceSettings(service_name="svc").tracing == "off"
    assert telemetry.tracer("svc-off") is None
    assert telemetry.tracer("svc-off", "off") is None
    assert telemetry.provider("svc-off") is None
    assert telemetry.active is False, "no provider made, so the outbox never asks for the current context"
    assert telemetry.current_carrier() is None


def test_a_malformed_tracing_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(telemetry.TRACING_VARIABLE, "jaeger")
    with pytest.raises(ValueError, match="TWEETSHOP_TRACING"):
        telemetry.tracer("svc-bad")
    monkeypatch.setenv("TWEETSHOP_TRACING", "zipkin")
    with pytest.raises(ValueError):
        ServiceSettings(service_name="svc")


def test_otlp_makes_a_provider_named_after_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    # No collector is needed to make one: the exporter sends only when a batch is flushed (never, here).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    try:
        made = telemetry.provider("svc-otlp", "otlp")
        assert made is not None and telemetry.active
        assert made.resource.attributes["service.name"] == "svc-otlp"
        assert telemetry.provider("svc-otlp", "otlp") is made, "one per service and process"
    finally:
        telemetry.export_to(None)
    assert telemetry.active is False


# --- carriers and headers ----------------------------------------------------------------------------------------


def test_the_context_stored_at_enqueue_time_makes_the_publish_a_child(spans: InMemorySpanExporter) -> None:
    tracer = telemetry.tracer("svc")
    assert tracer is not None
    with tracer.start_as_current_span("POST /orders"):
        stored = telemetry.current_carrier()
    assert stored is not None and json.loads(stored)["traceparent"].startswith("00-")
    tracer.start_span("send", context=telemetry.context_of_carrier(stored)).end()
    enqueueing, publish = spans.get_finished_spans()
    assert hex_trace(publish) == hex_trace(enqueueing)
    assert publish.parent is not None and enqueueing.context is not None
    assert publish.parent.span_id == enqueueing.context.span_id


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("traceparent", b"garbage")],
        [("traceparent", b"00-00000000000000000000000000000000-00f067aa0ba902b7-01")],  # an all-zero trace id
        [("traceparent", b"\xff\xfe")],
        [("traceparent", b"00-" + b"a" * 5000)],
    ],
)
def test_a_malformed_traceparent_header_is_no_parent(headers: list[tuple[str, bytes]]) -> None:
    assert telemetry.context_of_headers(headers) is None


@pytest.mark.parametrize("stored", [None, "", "not json", "[1, 2]", '{"traceparent": 7}', '{"traceparent": "x"}'])
def test_a_malformed_stored_context_is_no_parent(stored: str | None) -> None:
    assert telemetry.context_of_carrier(stored) is None


def test_headers_carry_the_span_and_the_trace_state(spans: InMemorySpanExporter) -> None:
    tracer = telemetry.tracer("svc")
    assert tracer is not None
    parent = telemetry.context_of_headers([("traceparent", TRACEPARENT.encode()), ("tracestate", b"vendor=1")])
    span = tracer.start_span("send", context=parent)
    headers = dict(telemetry.headers_of(span))
    span.end()
    assert headers["traceparent"].decode().split("-")[1] == TRACE_ID
    assert headers["traceparent"].decode().split("-")[2] == format(span.get_span_context().span_id, "016x")
    assert headers["tracestate"] == b"vendor=1"


# --- HTTP in -----------------------------------------------------------------------------------------------------


async def _ready() -> None:
    return None


def traced_app(trusted_proxies: str = "127.0.0.1") -> FastAPI:
    """httpx's ASGITransport connects from 127.0.0.1: trusted by default, as the web app is by a service."""
    app = FastAPI()
    install_common(
        app,
        {"database": _ready},
        max_body_bytes=1000,
        tracer=telemetry.tracer("svc"),
        trusted_proxies=parse_trusted_proxies(trusted_proxies),
    )

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, str]:
        return {"id": order_id}

    return app


async def test_a_request_is_a_server_span_named_by_its_route_and_child_of_its_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=traced_app()), base_url="http://svc") as client:
        answer = await client.get(
            "/orders/42?token=secret", headers={"traceparent": TRACEPARENT, "authorization": "Bearer tsk_secret"}
        )
        assert answer.status_code == 200
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(probe)).status_code == 200
    [span] = spans.get_finished_spans()  # the probes and the scrape are not traced
    assert span.name == "GET /orders/{order_id}" and span.kind == SpanKind.SERVER
    assert hex_trace(span) == TRACE_ID and hex_parent(span) == PARENT_ID
    attributes = dict(span.attributes or {})
    assert attributes["http.route"] == "/orders/{order_id}"
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.query"] == "token=REDACTED", "a buyer's token rides in the map page's URL"
    assert "secret" not in json.dumps({k: str(v) for k, v in attributes.items()}), "no header, token or query kept"


@pytest.mark.parametrize("trusted", ["", "10.0.0.0/8", "::1"])
async def test_a_trace_context_from_a_peer_that_is_no_trusted_proxy_is_not_believed(
    spans: InMemorySpanExporter, trusted: str
) -> None:
    """A client cannot choose our trace id, our parent span, or what its tracestate and baggage add to our trace."""
    forged = {"traceparent": TRACEPARENT, "tracestate": "evil=1", "baggage": "user=admin"}
    transport = httpx.ASGITransport(app=traced_app(trusted_proxies=trusted))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        assert (await client.get("/orders/42", headers=forged)).status_code == 200
    [span] = spans.get_finished_spans()
    assert span.name == "GET /orders/{order_id}"
    assert hex_trace(span) != TRACE_ID and hex_parent(span) is None
    assert span.context is not None and "evil" not in span.context.trace_state.to_header()


async def test_without_a_tracer_no_middleware_is_added(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(telemetry.TRACING_VARIABLE, raising=False)
    app = traced_app()
    assert all(m.cls is not telemetry.server_middleware for m in app.user_middleware)


# --- Kafka in: a CONSUMER span per message ------------------------------------------------------------------------


class FakeConnection:
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def fetch(self, _sql: str, _consumer: str, event_ids: list[uuid.UUID], *_: Any) -> list[dict[str, Any]]:
        return [{"event_id": event_id} for event_id in event_ids]


class FakePool:
    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        yield FakeConnection()


async def test_each_consumed_message_is_a_consumer_span_child_of_its_headers(spans: InMemorySpanExporter) -> None:
    broker = KafkaBroker()
    seen: list[str | None] = []
    logged: list[Any] = []

    async def handle(_conn: Any, event: Any) -> None:
        seen.append(telemetry.current_carrier())  # what an enqueue here would store
        logged.append(structlog.contextvars.get_contextvars().get("trace_id"))

    ReliableSubscriber(
        broker=broker,
        pool=FakePool(),  # type: ignore[arg-type]
        topics=TopicNames("ns."),
        topic=topics.CHECKOUT_ORDERS,
        group_id="ns.svc.orders",
        handler=handle,
        tracer=telemetry.tracer("svc"),
    )
    with_parent, without = order_placed(), order_placed()
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(
            with_parent.to_bytes(), "ns." + topics.CHECKOUT_ORDERS, headers={"traceparent": TRACEPARENT}
        )
        await test_broker.publish(without.to_bytes(), "ns." + topics.CHECKOUT_ORDERS)
    first, second = spans.get_finished_spans()
    assert first.name == "process ns.checkout.orders.v1" and first.kind == SpanKind.CONSUMER
    assert hex_trace(first) == TRACE_ID and hex_parent(first) == PARENT_ID
    assert second.parent is None, "a message without a traceparent starts a trace of its own"
    attributes = dict(first.attributes or {})
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == "ns.checkout.orders.v1"
    assert attributes["messaging.consumer.group.name"] == "ns.svc.orders"
    assert attributes["messaging.message.id"] == str(with_parent.event_id)
    assert attributes["messaging.kafka.message.key"] == with_parent.key()
    # The handler ran inside the span: its enqueue stores this span as the parent of what it publishes.
    assert seen[0] is not None and json.loads(seen[0])["traceparent"].split("-")[1] == TRACE_ID
    assert logged[0] == TRACE_ID, "the handler's log lines name the trace"
    remembered = telemetry.recall(topics.CHECKOUT_ORDERS, with_parent.key())
    assert remembered is not None, "work this message wakes in the process can continue its trace"


# --- Kafka out: the relay's PRODUCER spans -------------------------------------------------------------------------


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[tuple[str, bytes]]]] = []

    async def send(self, topic: str, _value: bytes, *, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        self.sent.append((topic, headers))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class RelayConnection:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    async def fetch(self, *_: Any) -> list[dict[str, Any]]:
        return self.rows

    async def fetchrow(self, *_: Any) -> dict[str, Any]:
        return {"n": 0, "age": 0}

    async def execute(self, *_: Any) -> None:
        return None


def outbox_row(trace_context: str | None, *, more: int = 0) -> dict[str, Any]:
    return {
        "id": 1,
        "topic": topics.CHECKOUT_ORDERS,
        "message_key": "order-1",
        "event_type": "OrderPlaced",
        "correlation_id": "corr-1",
        "payload": b"{}",
        "more_payloads": [b"{}"] * more or None,
        "trace_context": trace_context,
        "age_s": 0.0,
    }


async def test_the_relay_publishes_a_row_as_a_producer_span_child_of_the_enqueueing_span(
    spans: InMemorySpanExporter,
) -> None:
    tracer = telemetry.tracer("svc")
    assert tracer is not None
    with tracer.start_as_current_span("POST /orders") as enqueueing:
        stored = telemetry.current_carrier()
    producer = FakeProducer()
    relay = OutboxRelay(None, producer, TopicNames("ns."), "svc", tracer=tracer)  # type: ignore[arg-type]
    assert await relay.publish_pending(RelayConnection([outbox_row(stored, more=2)])) == 3  # type: ignore[arg-type]
    publish = next(s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER)
    assert publish.name == "send ns.checkout.orders.v1"
    assert publish.parent is not None and publish.parent.span_id == enqueueing.get_span_context().span_id
    assert dict(publish.attributes or {})["messaging.batch.message_count"] == 3
    assert publish.context is not None
    wanted = f"00-{format(publish.context.trace_id, '032x')}-{format(publish.context.span_id, '016x')}-"
    sent = [dict(headers)["traceparent"].decode() for _, headers in producer.sent]
    assert len(sent) == 3 and all(value.startswith(wanted) for value in sent), sent


async def test_with_tracing_off_the_relay_sends_no_trace_headers() -> None:
    producer = FakeProducer()
    relay = OutboxRelay(None, producer, TopicNames(""), "svc")  # type: ignore[arg-type]
    await relay.publish_pending(RelayConnection([outbox_row('{"traceparent": "' + TRACEPARENT + '"}')]))  # type: ignore[arg-type]
    [(_, headers)] = producer.sent
    assert [name for name, _ in headers] == ["event_type", "content-type", "correlation_id"]


async def test_a_failed_publish_ends_its_span_as_an_error(spans: InMemorySpanExporter) -> None:
    class Refusing(FakeProducer):
        async def send(self, topic: str, _value: bytes, *, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError("broker gone"))
            return failed

    relay = OutboxRelay(None, Refusing(), TopicNames(""), "svc", tracer=telemetry.tracer("svc"))  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await relay.publish_pending(RelayConnection([outbox_row(None)]))  # type: ignore[arg-type]
    [span] = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR and span.parent is None
    assert dict(span.attributes or {})["error.type"] == "ConnectionError"


# --- HTTP out: the web app's gateway clients -------------------------------------------------------------------------


def test_query_values_are_redacted_and_names_kept() -> None:
    assert telemetry.redacted_query("token=abc&since=5&flag") == "token=REDACTED&since=REDACTED&flag"
    assert telemetry.redacted_query("") == ""


async def test_an_instrumented_client_sends_its_span_as_traceparent_without_the_query_values(
    spans: InMemorySpanExporter,
) -> None:
    received: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200, json={})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        telemetry.instrument_httpx(client, "svc")
        await client.get("http://tracking/shipments/1/stream?token=tok_secret")
    [span] = spans.get_finished_spans()
    assert span.kind == SpanKind.CLIENT and span.context is not None
    traceparent = received[0].headers["traceparent"]
    assert traceparent.split("-")[1:3] == [format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")]
    assert dict(span.attributes or {})["url.full"] == "http://tracking/shipments/1/stream?token=REDACTED"


async def test_with_tracing_off_a_client_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(telemetry.TRACING_VARIABLE, raising=False)
    received: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        telemetry.instrument_httpx(client, "svc-off")
        await client.get("http://tracking/")
    assert "traceparent" not in received[0].headers
    assert not getattr(client, "_is_instrumented_by_opentelemetry", False)
