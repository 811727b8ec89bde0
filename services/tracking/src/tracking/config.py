"""Settings of the tracking service (environment variables TWEETSHOP_*)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from tweetshop_platform.settings import DEV_OPERATOR_KEY, ServiceSettings

__all__ = ["DEV_OPERATOR_KEY", "TrackingSettings", "check_tile_url"]

# A tile server's host: a DNS name or IPv4 address and a port, optionally behind Leaflet's `{s}.` subdomain.
_TILE_HOST = re.compile(r"(\{s\}\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?")
# What a tile URL template may hold: URL characters, none that a Content-Security-Policy or HTML treats specially.
_TILE_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&()*+=%{}-]+")
_TILE_PLACEHOLDERS = {"s", "z", "x", "y", "r"}


def check_tile_url(value: str) -> str:
    """A tile URL template the map page may use, or ValueError saying what is wrong with it.

    The template ends up in the page (as JSON data) and its origin in the page's CSP (img-src), so only a plain
    http(s) URL with Leaflet's ``{z}/{x}/{y}`` placeholders passes: no other scheme, no quote, space, ``;`` or
    ``,`` (which would add CSP sources or directives), no credentials, no placeholder in the host but ``{s}.``.
    """
    url = value.strip()
    if not url:
        return ""
    if len(url) > 500 or not _TILE_URL_CHARS.fullmatch(url):
        raise ValueError("a tile URL is at most 500 URL characters, without quotes, spaces, ';', ',', '<' or '>'")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("a tile URL starts with https:// (or http://)")
    if not _TILE_HOST.fullmatch(parts.netloc):
        raise ValueError("a tile URL names its server as host[:port] (or {s}.host), without credentials")
    try:
        port = parts.port
    except ValueError:  # over 65535
        port = 0
    if port == 0:
        raise ValueError("a tile URL's port is 1 to 65535")
    placeholders = set(re.findall(r"\{([^{}]*)\}", url))
    if not {"z", "x", "y"} <= placeholders:
        raise ValueError("a tile URL holds the {z}, {x} and {y} placeholders")
    if placeholders - _TILE_PLACEHOLDERS:
        raise ValueError("a tile URL's placeholders are {s}, {z}, {x}, {y} and {r} only")
    return url


class TrackingSettings(ServiceSettings):
    service_name: str = "tracking"
    http_port: int = 8004
    public_url: str = "http://localhost:8004"

    # Every courier POST holds a connection for its whole transaction: the busiest path needs more than the default.
    database_pool_max: int = Field(default=30, ge=1, description="Most Postgres connections the HTTP API opens")

    # Status rules: arriving near the destination moves a shipment along.
    delivery_radius_m: float = Field(default=50, gt=0, description="A point this close to the destination: delivered")
    out_for_delivery_radius_m: float = Field(
        default=1000, gt=0, description="A point this close to the destination: out for delivery"
    )
    geofence_max_accuracy_m: float = Field(
        default=100, gt=0, description="A point reported less accurate than this never marks a parcel delivered"
    )

    # ETA: remaining great-circle distance over the recent average speed.
    eta_fallback_speed_mps: float = Field(default=8.0, gt=0, description="Speed assumed while no recent speed is known")
    eta_speed_window_s: float = Field(default=600, gt=0, description="Points this recent make the average speed")

    # Location ingest.
    location_batch_max: int = Field(default=500, ge=1, description="Most points in one POST (more: 413)")
    location_max_future_s: float = Field(default=300, ge=0, description="Clock skew allowed for recorded_at")
    location_max_age_s: float = Field(default=7 * 24 * 3600, gt=0, description="Oldest recorded_at accepted")

    # Retention: history is kept, but old points are thinned to one per window.
    location_thin_after_h: float = Field(
        default=72, gt=0, description="Points older than this many hours are thinned (see location_thin_keep_every_s)"
    )
    location_thin_keep_every_s: float = Field(
        default=60, ge=0, description="Thinned history keeps one point per this many seconds; 0 keeps every point"
    )
    location_thin_run_every_s: float = Field(default=3600, gt=0, description="How often the retention pass runs")

    # The buyer's map page.
    map_tile_url: str = Field(
        default="",
        description=(
            "Leaflet tile layer URL template, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png (its server is "
            "added to the page's CSP img-src); empty: the vendored Natural Earth basemap (land, borders, cities), "
            "which needs no network"
        ),
    )
    map_tile_attribution: str = Field(
        default="", max_length=300, description="Attribution shown with the tiles (plain text, never HTML)"
    )
    route_max_points: int = Field(default=2000, ge=1, description="Most points of the route the map page loads")

    # Live stream (server-sent events).
    sse_heartbeat_s: float = Field(default=15, gt=0, description="A comment line this often keeps proxies open")
    sse_retry_ms: int = Field(default=3000, ge=0, description="Reconnect delay suggested to EventSource clients")
    sse_queue_size: int = Field(default=64, ge=1, description="Updates buffered per watcher; older ones are dropped")
    sse_max_watchers: int = Field(
        default=10_000, ge=1, description="Open live streams one process serves; more get 503 (and retry elsewhere)"
    )
    live_fetch_max_wait_ms: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="How long the live feed's fetch waits for new points: the floor of a quiet stream's latency",
    )
    live_group_prefix: str = Field(
        default="tracking.live", description="Each process reads live updates in its own group <prefix>.<uuid>"
    )

    status_metrics_interval_s: float = Field(default=15, gt=0, description="How often shipments are counted by status")

    @field_validator("map_tile_url")
    @classmethod
    def _tile_url_is_safe(cls, value: str) -> str:
        return check_tile_url(value)
