"""Settings of the catalog service (environment variables TWEETSHOP_*)."""

from __future__ import annotations

from tweetshop_platform.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    service_name: str = "catalog"
    http_port: int = 8001
