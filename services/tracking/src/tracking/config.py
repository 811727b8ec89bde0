"""Settings of the tracking service (environment variables TWEETSHOP_*)."""

from __future__ import annotations

from tweetshop_platform.settings import ServiceSettings


class TrackingSettings(ServiceSettings):
    service_name: str = "tracking"
    http_port: int = 8004
    public_url: str = "http://localhost:8004"
