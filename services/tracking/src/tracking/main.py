"""tracking: shipments, courier locations, live map. The only wiring: HTTP routes, subscriptions, runtime."""

# No `from __future__ import annotations` here: FastAPI must see the closures' real types (Depends).
import asyncio
import functools
import hashlib
import json
import os
import uuid
from datetime import UTC, datetime
from importlib import resources
from os import PathLike
from typing import Annotated, Any
from urllib.parse import urlsplit

import structlog
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope
from tweetshop_platform import ratelimit
from tweetshop_platform.errors import DomainError, Unprocessable
from tweetshop_platform.openapi import (
    COURIER_TOKEN,
    OPERATOR_KEY,
    ORDER_ACCESS_TOKEN,
    ORDER_ACCESS_TOKEN_IN_URL,
    operator_dependency,
)
from tweetshop_platform.runtime import ServiceRuntime, create_service_app

from . import domain, handlers, live, metrics, service
from .access import TrackingAccess
from .api import CourierTokenOut, IngestOut, LocationBatchIn, RouteOut, ShipmentOut
from .config import DEV_OPERATOR_KEY, TrackingSettings, check_tile_url
from .domain import Rules, Shipment, ShipmentStatus, Thinning

log = structlog.get_logger(__name__)


def rules_of(settings: TrackingSettings) -> Rules:
    """The domain's numbers, from settings."""
    return Rules(
        delivery_radius_m=settings.delivery_radius_m,
        out_for_delivery_radius_m=settings.out_for_delivery_radius_m,
        geofence_max_accuracy_m=settings.geofence_max_accuracy_m,
        fallback_speed_mps=settings.eta_fallback_speed_mps,
        speed_window_s=settings.eta_speed_window_s,
        max_future_s=settings.location_max_future_s,
        max_age_s=settings.location_max_age_s,
    )


def thinning_of(settings: TrackingSettings) -> Thinning:
    """The retention rule, from settings."""
    return Thinning(
        keep_every_s=settings.location_thin_keep_every_s, older_than_s=settings.location_thin_after_h * 3600
    )


# The vendored Natural Earth basemap (static/vendor/natural-earth/README.md): drawn when no tile server is set.
BASEMAP_FILES = {"countries": "vendor/natural-earth/countries-50m.json", "places": "vendor/natural-earth/places.json"}
BASEMAP_ATTRIBUTION = "Made with Natural Earth"


@functools.cache
def basemap_config() -> dict[str, str]:
    """Where the page finds the vendored basemap: each file's URL carries its hash (cached for a year)."""
    urls = {name: f"/static/{path}?v={_asset_version(path)}" for name, path in BASEMAP_FILES.items()}
    return {**urls, "attribution": BASEMAP_ATTRIBUTION}


def page_config(settings: TrackingSettings, order_id: uuid.UUID) -> str:
    """What the map page needs to start, as JSON safe inside a <script> element."""
    config: dict[str, Any] = {
        "orderId": str(order_id),
        "tileUrl": settings.map_tile_url,
        "tileAttribution": settings.map_tile_attribution,
        # No tile server (the default, as under `make run`): the world from the vendored basemap, no network.
        "basemap": None if settings.map_tile_url else basemap_config(),
    }
    # "<" escaped: a value can never close the script element it sits in.
    return json.dumps(config).replace("<", "\\u003c")


def tile_source(tile_url: str) -> str | None:
    """The CSP source the map's tiles load from: the tile URL's origin, a ``{s}`` subdomain as ``*``.

    None (no tile source at all, never a bare ``*`` or scheme) for anything but a URL that
    ``config.check_tile_url`` accepts, which TrackingSettings already requires of ``map_tile_url``.
    """
    try:
        url = check_tile_url(tile_url)
    except ValueError:
        return None
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.netloc
    if host.startswith("{s}."):
        host = "*." + host[len("{s}.") :]
    return f"{parts.scheme}://{host}"


def map_page_csp(settings: TrackingSettings) -> str:
    """The map page's Content-Security-Policy: its own scripts, styles and API only; tiles from their server."""
    tiles = tile_source(settings.map_tile_url)
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            # Leaflet positions its panes through element.style (CSSOM), which style-src does not restrict.
            "style-src 'self'",
            "img-src 'self' data:" + (f" {tiles}" if tiles else ""),
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def map_page_headers(settings: TrackingSettings) -> dict[str, str]:
    """Headers of the map page: no caching, a strict CSP, and no Referer (its URL carries the buyer's token)."""
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": map_page_csp(settings),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


class CachedStaticFiles(StaticFiles):
    """Static files with caching headers: a year (immutable) when the URL names the version (``?v=``), as every URL
    the map page uses does; an hour otherwise. ETag and Last-Modified as StaticFiles sets them."""

    def file_response(
        self, full_path: PathLike[str] | str, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        versioned = any(part.startswith(b"v=") for part in scope.get("query_string", b"").split(b"&"))
        response.headers["Cache-Control"] = (
            "public, max-age=31536000, immutable" if versioned else "public, max-age=3600"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _asset_version(*names: str) -> str:
    """A short hash of the page's own static files, so a browser never keeps an old copy after a deploy."""
    digest = hashlib.sha256()
    for name in names:
        digest.update((resources.files("tracking") / "static" / name).read_bytes())
    return digest.hexdigest()[:12]


def create_app(settings: TrackingSettings | None = None) -> FastAPI:
    """The tracking service: HTTP API, the orders consumer, the live-update feed and the outbox relay."""
    settings = settings or TrackingSettings()
    rules = rules_of(settings)
    # Topics, groups and their settings: tweetshop_contracts.system; here only each group's handler.
    runtime = ServiceRuntime(settings, package="tracking")
    runtime.subscribe_declared({"orders": handlers.on_order_event})

    # Live map: ONE subscription per process, in a group of its own, fanned out to every watcher here.
    hub = live.LiveHub(queue_size=settings.sse_queue_size)
    feed = live.LiveFeed(
        hub,
        runtime.topics,
        runtime.live_view("live").topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"{runtime.topics.namespace}{settings.live_group_prefix}.{uuid.uuid4()}",
        # aiokafka's default (500 ms) would hold every quiet update back by up to half a second.
        fetch_max_wait_ms=settings.live_fetch_max_wait_ms,
        listener=live.AssignmentListener(),
        security=runtime.kafka_security,
        quiet_fetch=settings.quiet_fetch,
    )
    runtime.add_worker("live-feed", feed.run)

    async def count_shipments_by_status() -> None:
        while True:
            for status, count in (await service.count_by_status(runtime.background_pool)).items():
                metrics.SHIPMENTS_BY_STATUS.labels(status).set(count)
            await asyncio.sleep(settings.status_metrics_interval_s)

    runtime.add_worker("shipment-status-metrics", count_shipments_by_status)

    thinning = thinning_of(settings)

    async def thin_location_history() -> None:
        while True:
            done = await service.thin_history(runtime.background_pool, thinning, now=datetime.now(UTC))
            if done.shipments:
                log.info("location history thinned", shipments=done.shipments, points_deleted=done.deleted)
            await asyncio.sleep(settings.location_thin_run_every_s)

    if thinning.keep_every_s > 0:
        runtime.add_worker("location-history-thinning", thin_location_history)
    runtime.add_worker("live-streams-shutdown", lambda: live.close_streams_on_exit_signal(hub))

    if settings.operator_key.get_secret_value() == DEV_OPERATOR_KEY:
        log.warning("TWEETSHOP_OPERATOR_KEY is the development default; set a secret one outside development")

    app = create_service_app(
        runtime,
        title="tweetshop tracking",
        description=(
            "Shipments of paid orders (checkout.orders.v1 → tracking.shipments.v1), courier locations "
            "(→ tracking.locations.v1), a live stream per shipment and the buyer's map page."
        ),
    )
    app.state.live_hub = hub
    static_dir = resources.files("tracking") / "static"
    # Leaflet, topojson-client and the Natural Earth basemap (vendored from package registries) and the page's own
    # script: nothing is fetched from elsewhere.
    app.mount("/static", CachedStaticFiles(directory=str(static_dir)), name="static")
    page_template = (
        (resources.files("tracking") / "templates" / "track.html")
        .read_text(encoding="utf-8")
        .replace("__ASSET_VERSION__", _asset_version("track.js", "track.css"))
    )
    page_headers = map_page_headers(settings)

    def now() -> datetime:
        return datetime.now(UTC)

    def view(shipment: Shipment) -> ShipmentOut:
        return ShipmentOut.of(shipment, domain.estimate_eta(shipment, now(), rules))

    def render(shipment: Shipment) -> dict[str, Any]:
        return view(shipment).model_dump(mode="json")

    courier_tokens = service.CourierTokens()
    access = TrackingAccess(
        settings.operator_key,
        buyer=lambda order_id, token: service.authorize_buyer(runtime.pool, order_id, token),
        courier=lambda shipment_id, token: courier_tokens.authorize(runtime.pool, shipment_id, token),
    )
    # Before any route below is added: each of them refuses the operator key in its URL, first thing.
    app.router.dependencies.append(Depends(access.refuse_operator_key_in_url))
    operator = operator_dependency(settings.operator_key)

    async def reader_credential(
        request: Request,
        _bearer: Annotated[str | None, Depends(ORDER_ACCESS_TOKEN.optional())],
        _in_url: Annotated[str | None, Depends(ORDER_ACCESS_TOKEN_IN_URL)],
        _operator: Annotated[str | None, Depends(OPERATOR_KEY.optional())],
    ) -> str:
        """A reader's credential: the order's access token (bearer or ``?token=``) or the operator key; 401 without.

        The route checks it against what it reads; this names the alternatives in /openapi.json.
        """
        return access.presented_token(request)

    @app.get(
        "/shipments",
        operation_id="listShipments",
        response_model=list[ShipmentOut],
        tags=["shipments"],
        summary="The shipments of an order (buyers: order_id) or in one status (operators: status)",
        description=(
            "`order_id`: the order's shipments, for its buyer. `status`: shipments in that status, oldest first, "
            "for operators (bearer: the operator key); page with `created_after` = the last one's `created_at` "
            "and `after_id` = its `id` (shipments created together share a `created_at`: `created_after` alone "
            "skips those of them past the end of the page)."
        ),
        responses={
            401: {"description": "No token (order_id: the order's access token; status: the operator key)"},
            403: {"description": "status with another key than the operator key, or the operator key in the URL"},
            404: {"description": "order_id: no shipment of this order can be read with this token"},
            422: {"description": "Neither order_id nor status given"},
        },
        dependencies=[Depends(reader_credential)],
    )
    async def list_shipments(
        request: Request,
        order_id: uuid.UUID | None = None,
        status: ShipmentStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        created_after: datetime | None = None,
        after_id: Annotated[uuid.UUID | None, Query(description="With created_after: the last one's id")] = None,
    ) -> list[ShipmentOut]:
        if order_id is not None:
            await access.authorize_order_reader(request, order_id)
            return [view(s) for s in await service.shipments_for_order(runtime.pool, order_id)]
        if status is None:
            raise Unprocessable("give order_id (a buyer's order) or status (operators)", code="missing_filter")
        access.operator(request)
        if after_id is not None and created_after is None:
            raise Unprocessable("after_id pages only together with created_after", code="after_id_alone")
        found = await service.shipments_in_status(
            runtime.pool, status, limit=limit, created_after=created_after, after_id=after_id
        )
        return [view(s) for s in found]

    reader_responses: dict[int | str, dict[str, Any]] = {
        401: {"description": "No token: send the order's access token (bearer, or `access_token` in the query)"},
        403: {"description": "The operator key in the URL: operators send it as `Authorization: Bearer` only"},
        404: {"description": "Unknown shipment, or one this token may not read"},
    }

    @app.get(
        "/shipments/{shipment_id}",
        operation_id="getShipment",
        response_model=ShipmentOut,
        tags=["shipments"],
        summary="One shipment (bearer: its order's access token, or the operator key)",
        responses=reader_responses,
        dependencies=[Depends(reader_credential)],
    )
    async def get_shipment(shipment_id: uuid.UUID, request: Request) -> ShipmentOut:
        shipment = await service.get_shipment(runtime.pool, shipment_id)
        await access.authorize_shipment_reader(request, shipment)
        return view(shipment)

    @app.get(
        "/shipments/{shipment_id}/locations",
        operation_id="getShipmentRoute",
        response_model=RouteOut,
        tags=["shipments"],
        summary="The route so far: the newest stored points, oldest first (what the map page draws)",
        responses=reader_responses,
        dependencies=[Depends(reader_credential)],
    )
    async def get_route(
        shipment_id: uuid.UUID,
        request: Request,
        limit: Annotated[int | None, Query(ge=1, description="At most this many points (capped)")] = None,
    ) -> RouteOut:
        shipment = await service.get_shipment(runtime.pool, shipment_id)
        await access.authorize_shipment_reader(request, shipment)
        wanted = min(limit or settings.route_max_points, settings.route_max_points)
        # One more than wanted tells whether the route was cut.
        points = await service.route_of(runtime.pool, shipment_id, limit=wanted + 1)
        return RouteOut.of(shipment_id, points, wanted)

    @app.post(
        "/shipments/{shipment_id}/locations",
        operation_id="postCourierLocations",
        response_model=IngestOut,
        tags=["couriers"],
        summary="A courier's batch of GPS fixes (bearer: the shipment's courier token)",
        responses={
            401: {"description": "No courier token"},
            403: {"description": "Not this shipment's courier token"},
            404: {"description": "Unknown shipment"},
            409: {"description": "The shipment is delivered or cancelled"},
            413: {"description": "More points than a batch may hold"},
            422: {"description": "A point is invalid (range, NaN, timezone, too far in the future or past)"},
        },
        dependencies=[Depends(COURIER_TOKEN)],  # the token access.courier_token checks (401 without)
    )
    async def post_locations(
        shipment_id: uuid.UUID, body: LocationBatchIn, token: Annotated[str, Depends(access.courier_token)]
    ) -> IngestOut:
        result = await service.ingest_locations(
            runtime.pool,
            shipment_id,
            token,
            [p.to_point() for p in body.points],
            rules,
            now=now(),
            max_batch=settings.location_batch_max,
            tokens=courier_tokens,
        )
        return IngestOut(accepted=result.accepted, duplicates=result.duplicates, shipment=view(result.shipment))

    @app.post(
        "/shipments/{shipment_id}/courier-token",
        operation_id="issueCourierToken",
        response_model=CourierTokenOut,
        tags=["operators"],
        summary="Issue (or replace) the shipment's courier token (bearer: the operator key)",
        dependencies=[Depends(operator)],
        responses={
            401: {"description": "No operator key"},
            403: {"description": "Not the operator key"},
            404: {"description": "Unknown shipment"},
        },
    )
    async def post_courier_token(shipment_id: uuid.UUID) -> CourierTokenOut:
        token = await service.issue_courier_token(runtime.pool, shipment_id)
        return CourierTokenOut(shipment_id=shipment_id, courier_token=token)

    @app.get(
        "/shipments/{shipment_id}/stream",
        operation_id="streamShipment",
        tags=["shipments"],
        summary="Live updates as server-sent events: snapshot, then location / status, end once closed",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}},
            **reader_responses,
            503: {"description": "This replica serves as many live streams as it may (`too_many_watchers`): retry"},
        },
        dependencies=[Depends(reader_credential)],
    )
    async def stream_shipment(shipment_id: uuid.UUID, request: Request) -> StreamingResponse:
        shipment = await service.get_shipment(runtime.pool, shipment_id)  # 404 as JSON, before streaming
        await access.authorize_shipment_reader(request, shipment)
        if hub.watcher_count() >= settings.sse_max_watchers:
            metrics.SSE_REFUSED.inc()
            # Bounded memory: the browser's EventSource retries, possibly on a less busy replica.
            raise DomainError(
                f"this replica serves {settings.sse_max_watchers} live streams already; retry shortly",
                code="too_many_watchers",
                status=503,
            )
        events = live.shipment_stream(
            hub,
            shipment_id,
            load=lambda: service.get_shipment(runtime.pool, shipment_id),
            render=render,
            heartbeat_s=settings.sse_heartbeat_s,
            retry_ms=settings.sse_retry_ms,
        )
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            # no-transform/X-Accel-Buffering: proxies must pass each event on at once.
            headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
        )

    @app.get(
        "/track/{order_id}",
        operation_id="getTrackingPage",
        response_class=HTMLResponse,
        tags=["buyers"],
        summary="The buyer's tracking page (the link carries the order's access token: `?token=`)",
        responses=reader_responses,
        dependencies=[Depends(reader_credential)],
    )
    async def track_page(order_id: uuid.UUID, request: Request) -> HTMLResponse:
        await access.authorize_order_reader(request, order_id)
        html = page_template.replace("__CONFIG_JSON__", page_config(settings, order_id))
        return HTMLResponse(html, headers=page_headers)

    # Couriers post often, by design: their own generous limit, counted per courier token, not per address.
    ratelimit.limit_routes(app, {"POST /shipments/{shipment_id}/locations": ratelimit.COURIER_LOCATIONS})
    return app
