"""Settings of the catalog service (environment variables TWEETSHOP_*)."""

from __future__ import annotations

from pydantic import Field
from tweetshop_platform.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    service_name: str = "catalog"
    http_port: int = 8001
    allocation_units: int = Field(
        default=500,
        ge=0,
        le=10_000,
        description=(
            "Units of each product allocated to checkout, which reserves from them in the order's own transaction "
            "(no round trip to catalog before the payment); topped up when half is used. 0: off, catalog decides "
            "every reservation. The most a merchant's stock or status change can be overtaken by (see the runbook). "
            "Checkout keeps a row per allocated unit. 500: what checkout takes in a drop while a top-up makes its "
            "round trip (about 400 orders/s for a second on 2 cores, bench/README.md stop 26); with 50, a drop's "
            "buyers outran the top-ups and went to catalog the slow way"
        ),
    )
