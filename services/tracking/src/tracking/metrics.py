"""Prometheus metrics of tracking (the backbone's own are in tweetshop_platform.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

LOCATIONS_INGESTED = Counter(
    "tweetshop_tracking_locations_ingested_total", "Courier location points stored (retried duplicates excluded)"
)
LOCATION_DUPLICATES = Counter(
    "tweetshop_tracking_location_duplicates_total", "Points of a retried batch that were already stored"
)
LOCATION_BATCHES_REFUSED = Counter(
    "tweetshop_tracking_location_batches_refused_total", "Location batches refused", ["reason"]
)
SSE_WATCHERS = Gauge("tweetshop_tracking_sse_watchers", "Open live streams (GET /shipments/{id}/stream)")
LIVE_UPDATES_DROPPED = Counter(
    "tweetshop_tracking_live_updates_dropped_total", "Live updates dropped because a watcher read too slowly"
)
LIVE_PARTITIONS_ASSIGNED = Gauge(
    "tweetshop_tracking_live_partitions_assigned", "Partitions the live-update consumer of this process reads"
)
SHIPMENTS_BY_STATUS = Gauge("tweetshop_tracking_shipments", "Shipments by status", ["status"])
LOCATIONS_THINNED = Counter(
    "tweetshop_tracking_locations_thinned_total", "Old location points deleted by the retention setting"
)
SSE_REFUSED = Counter(
    "tweetshop_tracking_sse_refused_total", "Live streams refused because the process had its most watchers"
)
