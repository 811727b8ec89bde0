"""Settings of the catalog service (environment variables TWEETSHOP_*)."""

from __future__ import annotations

from pydantic import Field
from tweetshop_platform.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    service_name: str = "catalog"
    http_port: int = 8001
    allocation_units: int = Field(
        default=50,
        ge=0,
        le=100_000,
        description=(
            "Units of each product allocated to checkout, which reserves from them in the order's own transaction "
            "(no round trip to catalog before the payment); topped up when half is used. 0: off, catalog decides "
            "every reservation. The most a merchant's stock or status change can be overtaken by (see the runbook)"
        ),
    )
