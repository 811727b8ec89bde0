"""The HTTP surface every service shares: JSON errors, body limit, health, readiness, metrics."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import structlog
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.trace import Tracer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics, telemetry
from .errors import DomainError, TooManyRequests
from .openapi import operator_dependency
from .proxies import Network

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]


class Readiness(BaseModel):
    """The body of /readyz, ready (200) or not (503)."""

    status: Literal["ready", "unready"]
    checks: dict[str, str] = Field(description="Each check (database, broker...) → ok, or why not")


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    """The one shape of every error answer."""
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    return body


def too_many_requests(code: str, message: str, retry_after_s: float, **details: Any) -> JSONResponse:
    """The one 429 answer (rate limits, the web app's stream caps, checkout's unpaid-order cap): ``Retry-After``
    in whole seconds, at least 1, and the usual error body with ``details.retry_after_s``."""
    wait = max(1, math.ceil(retry_after_s))
    return JSONResponse(
        error_body(code, message, retry_after_s=wait, **details), status_code=429, headers={"Retry-After": str(wait)}
    )


class BodySizeLimit:
    """Refuses bodies over the limit with 413 before anything parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            error_body("payload_too_large", f"request body over {self.max_bytes} bytes"), status_code=413
        )
        await response({"type": "http"}, _empty_receive, send)


class _TooLarge(Exception):
    pass


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class ObserveRequests:
    """Correlation id (from ``X-Correlation-ID`` or new) bound to the logs, echoed back, and request metrics.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` cost more CPU per
    request than the order handler itself (measured by the orders benchmark).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = next((v for k, v in scope.get("headers", []) if k == b"x-correlation-id"), b"")
        correlation_id = presented.decode("latin-1")[:200] or str(uuid.uuid4())
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-correlation-id", correlation_id.encode())]
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                metrics.HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
                metrics.HTTP_SECONDS.labels(scope["method"], route).observe(time.perf_counter() - started)


def install_operator_check(app: FastAPI, operator_key: SecretStr) -> None:
    """``GET /ops/operator``: 204 for the operator key. The `tweetshop` command confirms its key here."""

    @app.get(
        "/ops/operator",
        operation_id="confirmOperatorKey",
        status_code=204,
        response_class=Response,
        tags=["operators"],
        summary="204 when the bearer is the operator key (the `tweetshop` command checks its key here)",
        dependencies=[Depends(operator_dependency(operator_key))],
        responses={401: {"description": "No key"}, 403: {"description": "Not the operator key"}},
    )
    async def confirm_operator() -> Response:
        return Response(status_code=204)


def install_common(
    app: FastAPI,
    readiness: dict[str, ReadinessCheck],
    max_body_bytes: int,
    *,
    tracer: Tracer | None = None,
    trusted_proxies: Sequence[Network] = (),
) -> None:
    """Add error handlers, request metrics and correlation ids, and /healthz, /readyz, /metrics; with a ``tracer``
    (tracing on, telemetry.py), a SERVER span per request, outermost, continuing the trace of a request only when
    it comes from one of ``trusted_proxies``."""

    @app.exception_handler(DomainError)
    async def on_domain_error(_: Request, exc: DomainError) -> JSONResponse:
        if isinstance(exc, TooManyRequests):
            return too_many_requests(exc.code, exc.message, exc.retry_after_s, **exc.details)
        return JSONResponse(error_body(exc.code, exc.message, **exc.details), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"location": list(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{'.'.join(str(p) for p in e['location'])}: {e['message']}" for e in problems[:5])
        return JSONResponse(
            error_body("validation_error", f"invalid request: {summary}", problems=problems), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", error=repr(exc))
        return JSONResponse(error_body("internal_error", "internal error; see the service log"), status_code=500)

    app.add_middleware(ObserveRequests)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    if tracer is not None:
        app.add_middleware(telemetry.server_middleware, tracer=tracer, trusted_proxies=trusted_proxies)

    @app.get("/healthz", operation_id="checkLiveness", tags=["operations"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        operation_id="checkReadiness",
        tags=["operations"],
        summary="Readiness: the database and the broker answer",
        responses={
            200: {"model": Readiness},
            503: {"model": Readiness, "description": "Not ready: which check failed"},
        },
    )
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        ready = True
        for name, check in readiness.items():
            try:
                await asyncio.wait_for(check(), timeout=3)
                results[name] = "ok"
                metrics.READY.labels(name).set(1)
            except Exception as exc:
                ready = False
                results[name] = f"unavailable: {type(exc).__name__}: {exc}"[:300]
                metrics.READY.labels(name).set(0)
        return JSONResponse(
            {"status": "ready" if ready else "unready", "checks": results}, status_code=200 if ready else 503
        )

    @app.get(
        "/metrics",
        operation_id="getMetrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,  # the text exposition format, not JSON (as the OpenAPI document said)
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def run_uvicorn(app: ASGIApp, host: str, port: int, **uvicorn_options: Any) -> None:
    """Serve ``app`` with uvicorn as every tweetshop process does: logs are structlog's (no logging config or access
    log of uvicorn's), 10 s for requests to finish on shutdown, and no proxy headers."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # Who the client is, trusted_proxies decides (ratelimit.client_address; the web app's gateway.py), not
        # uvicorn (it believes X-Forwarded-For from 127.0.0.1 by default, so any local process could pose as any
        # address).
        proxy_headers=False,
        **uvicorn_options,
    )
