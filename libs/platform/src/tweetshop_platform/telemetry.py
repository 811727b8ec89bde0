"""Distributed tracing (OpenTelemetry): one purchase is one trace, across HTTP calls and Kafka hops.

Off by default. ``TWEETSHOP_TRACING=otlp`` turns it on: each service gets its own tracer provider (resource
``service.name`` = the service's name) that exports in batches over OTLP/HTTP, configured by the standard
variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_TRACES_SAMPLER``, ``OTEL_RESOURCE_ATTRIBUTES``...). Off, ``tracer()`` answers None and every caller skips
its tracing work: no provider, processor or exporter is made, nor is the SDK imported.

Where the trace context travels (W3C ``traceparent``/``tracestate``):
- HTTP in: ``server_middleware`` (opentelemetry-instrumentation-asgi), a SERVER span per request, named by route.
  A request's own ``traceparent``/``tracestate``/``baggage`` are believed only from a trusted proxy
  (``trusted_proxies``: the web app in front of a service); from anyone else the request starts a trace of its
  own, so no client can choose our trace ids, force sampling, or write its ``tracestate`` onto our events.
- HTTP out: the web app's gateway instruments its httpx clients (opentelemetry-instrumentation-httpx).
- Kafka out: ``outbox.enqueue`` stores ``current_carrier()`` with the row (column ``trace_context``), since the
  relay publishes later, from another task; the relay makes a PRODUCER span, child of the enqueueing span, and
  sends its context as ``traceparent``/``tracestate`` headers.
- Kafka in: the reliable subscriber makes a CONSUMER span per message, child of the context in its headers.
- Work a consumer hands to a background worker (checkout's payment worker, woken by ``StockReserved``):
  ``remember``/``recall`` by topic and key, in this process.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .proxies import Network, peer_is_trusted

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

TRACING_VARIABLE = "TWEETSHOP_TRACING"
Mode = Literal["off", "otlp"]
HEADERS = ("traceparent", "tracestate")
# What a request may carry of a trace, dropped unless its peer is a trusted proxy (the W3C headers and baggage).
_CONTEXT_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
INSTRUMENTATION = "tweetshop"
# Requests a trace would only drown in: probes and scrapes.
UNTRACED_PATHS = "/healthz$,/readyz$,/metrics$"
_REMEMBERED = 4096  # keys remember() keeps, per process

_PROPAGATOR = TraceContextTextMapPropagator()
_providers: dict[str, TracerProvider] = {}
_processor: SpanProcessor | None = None  # export_to()'s, for tests
_remembered: OrderedDict[tuple[str, str], Context] = OrderedDict()

# Whether any service of this process traces: the outbox looks at it before asking for the current context.
active = False


def mode_from_environment() -> Mode:
    """``TWEETSHOP_TRACING`` (for the web app, whose settings are not ``ServiceSettings``): "otlp" or "off"."""
    value = os.environ.get(TRACING_VARIABLE, "off").strip().lower() or "off"
    if value not in ("off", "otlp"):
        raise ValueError(f"{TRACING_VARIABLE} must be 'off' or 'otlp', not {value!r}")
    return "otlp" if value == "otlp" else "off"


def provider(service_name: str, mode: Mode | None = None) -> TracerProvider | None:
    """The tracer provider of ``service_name`` (made once per process); None when tracing is off.

    ``mode``: the service's ``tracing`` setting (None: ``TWEETSHOP_TRACING``). ``export_to`` (tests) turns tracing
    on whatever the mode says.
    """
    global active
    if service_name in _providers:
        return _providers[service_name]
    if (mode or mode_from_environment()) == "off" and _processor is None:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The instrumentations' HTTP attributes by the stable semantic conventions (http.request.method, url.path,
    # http.response.status_code...), not the old ones; read once, when the first instrumentation is made.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    made = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    if _processor is not None:
        made.add_span_processor(_processor)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        made.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _providers[service_name] = made
    active = True
    return made


def tracer(service_name: str, mode: Mode | None = None) -> Tracer | None:
    """The tracer of ``service_name``'s own spans; None when tracing is off (then trace nothing)."""
    made = provider(service_name, mode)
    return None if made is None else made.get_tracer(INSTRUMENTATION)


def export_to(processor: SpanProcessor | None) -> None:
    """Tests: every tracer provider made from now on sends its spans to ``processor`` (an in-memory exporter's),
    and tracing is on whatever the setting says. ``None`` undoes it and forgets the providers made."""
    global _processor, active
    _processor = processor
    if processor is None:
        for made in _providers.values():
            made.shutdown()
        _providers.clear()
        _remembered.clear()
        active = False


def server_middleware(app: ASGIApp, tracer: Tracer, trusted_proxies: Sequence[Network] = ()) -> ASGIApp:
    """``app`` with a SERVER span per HTTP request, child of the request's ``traceparent`` when its peer is one of
    ``trusted_proxies`` (none: every request starts its own trace).

    The span is named ``<method> <route>`` (``POST /orders``, never the path with its ids) once the route is
    known; probes and ``/metrics`` are not traced, and no header is recorded (``Authorization`` must never be).
    """
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    def by_method(scope: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return str(scope.get("method") or "HTTP"), {}

    middleware: ASGIApp = OpenTelemetryMiddleware(
        _NamedByRoute(app),
        excluded_urls=UNTRACED_PATHS,
        default_span_details=by_method,
        tracer=tracer,
        exclude_spans=["receive", "send"],
    )
    return _UntrustedTraceContextDropped(middleware, tuple(trusted_proxies))


class _UntrustedTraceContextDropped:
    """Outside the SERVER span: removes the trace context headers of a request whose peer is not a trusted proxy,
    before the instrumentation reads them (a client-chosen ``traceparent`` would pick our trace id and, with a
    parent-based sampler, whether we record; its ``tracestate`` would ride on every event of the purchase)."""

    def __init__(self, app: ASGIApp, trusted: tuple[Network, ...]) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not peer_is_trusted(scope, self.trusted):
            headers = scope.get("headers") or []
            if any(name in _CONTEXT_HEADERS for name, _ in headers):
                scope = {**scope, "headers": [(n, v) for n, v in headers if n not in _CONTEXT_HEADERS]}
        await self.app(scope, receive, send)


class _NamedByRoute:
    """Inside the SERVER span: names it ``<method> <route>`` and sets ``http.route`` when the answer starts (the
    router has matched by then; the span ends with the answer's last byte, so later would be too late)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        span = trace.get_current_span()
        if scope["type"] != "http" or not span.is_recording():
            await self.app(scope, receive, send)
            return
        redact_query_attributes(span)
        bound = logged(span)

        async def named(message: Message) -> None:
            route = getattr(scope.get("route"), "path", None)
            if message["type"] == "http.response.start" and isinstance(route, str):
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
            await send(message)

        with bound:
            await self.app(scope, receive, named)


def instrument_httpx(client: Any, service_name: str) -> None:
    """Trace ``client``'s requests (CLIENT spans) and send the trace context with them, when tracing is on."""
    made = provider(service_name)
    if made is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    async def redacted(span: Span, _request: Any) -> None:
        redact_query_attributes(span)

    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=made, request_hook=redacted)


# Attributes of HTTP spans that hold a query string (stable and old semantic conventions).
_QUERY_ATTRIBUTES = ("url.query", "url.full", "http.target", "http.url")


def redacted_query(query: str) -> str:
    """``query`` with every value replaced (``token=REDACTED``): a buyer's token rides in the map page's URL."""
    return "&".join(f"{pair.split('=', 1)[0]}=REDACTED" if "=" in pair else pair for pair in query.split("&") if pair)


def redact_query_attributes(span: Span) -> None:
    """Replace the query values the HTTP instrumentations recorded on ``span`` (names are kept)."""
    recorded = getattr(span, "attributes", None) or {}
    for name in _QUERY_ATTRIBUTES:
        value = recorded.get(name)
        if not isinstance(value, str) or not value:
            continue
        if name == "url.query":
            span.set_attribute(name, redacted_query(value))
        elif "?" in value:
            head, _, query = value.partition("?")
            span.set_attribute(name, f"{head}?{redacted_query(query)}")


def current_carrier() -> str | None:
    """The current trace context as JSON (``{"traceparent": ..., "tracestate": ...}``), or None outside a span."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return json.dumps(carrier, separators=(",", ":"))


def context_of_carrier(stored: str | None) -> Context | None:
    """The context ``current_carrier()`` stored (None for none, or for anything that is not one)."""
    if not stored:
        return None
    try:
        carrier = json.loads(stored)
    except ValueError:
        return None
    if not isinstance(carrier, dict):
        return None
    return context_of_headers((k, v) for k, v in carrier.items() if isinstance(k, str) and isinstance(v, str))


def context_of_headers(headers: Iterable[tuple[str, Any]] | Mapping[str, Any]) -> Context | None:
    """The remote parent in Kafka headers (``traceparent``, ``tracestate``; bytes or text), or None.

    The values come from anyone who can produce to the topic: the W3C propagator ignores a malformed one.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    carrier: dict[str, str] = {}
    for name, value in pairs:
        if name in HEADERS:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            carrier[name] = text[:512]
    if "traceparent" not in carrier:
        return None
    extracted = _PROPAGATOR.extract(carrier)
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


def headers_of(span: Span) -> list[tuple[str, bytes]]:
    """``traceparent``/``tracestate`` Kafka headers that make the receiver's spans children of ``span``."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return [(name, value.encode()) for name, value in carrier.items()]


def messaging_attributes(operation: str, topic: str, key: str, **more: Any) -> dict[str, Any]:
    """A Kafka span's attributes by the messaging semantic conventions (``operation``: send, process)."""
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
        "messaging.kafka.message.key": key,
    }
    attributes.update({name: value for name, value in more.items() if value is not None})
    return attributes


def remember(topic: str, key: str) -> None:
    """Keep the current context as the last one that handled ``key`` on ``topic`` in this process."""
    _remembered[(topic, key)] = trace.set_span_in_context(trace.get_current_span())
    _remembered.move_to_end((topic, key))
    while len(_remembered) > _REMEMBERED:
        _remembered.popitem(last=False)


def recall(topic: str, key: str) -> Context | None:
    """What ``remember`` kept for ``key`` on ``topic`` (None: not handled here lately, or tracing is off)."""
    return _remembered.get((topic, key))


def logged(span: Span) -> Any:
    """Bind ``trace_id`` (and ``span_id``) to the log lines written meanwhile: from a log line to its trace."""
    context = span.get_span_context()
    return structlog.contextvars.bound_contextvars(
        trace_id=format(context.trace_id, "032x"), span_id=format(context.span_id, "016x")
    )


@contextlib.contextmanager
def resumed(tracer: Tracer | None, name: str, topic: str, key: str, **attributes: Any) -> Iterator[None]:
    """An INTERNAL span ``name`` around background work that the consumption of ``key`` on ``topic`` asked for,
    child of that consumption's span when it happened in this process lately (else a trace of its own).
    Nothing at all when ``tracer`` is None (tracing off)."""
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(name, context=recall(topic, key), attributes=attributes) as span, logged(span):
        yield


__all__ = [
    "HEADERS",
    "active",
    "context_of_carrier",
    "context_of_headers",
    "current_carrier",
    "export_to",
    "headers_of",
    "instrument_httpx",
    "messaging_attributes",
    "mode_from_environment",
    "provider",
    "recall",
    "remember",
    "resumed",
    "server_middleware",
    "tracer",
]
