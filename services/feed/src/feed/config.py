"""Settings of the feed service (environment variables TWEETSHOP_*)."""

from __future__ import annotations

from tweetshop_platform.settings import ServiceSettings


class FeedSettings(ServiceSettings):
    service_name: str = "feed"
    http_port: int = 8002
