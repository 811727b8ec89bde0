"""Prometheus metrics of the backbone, shared by every service (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter(
    "tweetshop_messages_received_total", "Messages received by a consumer", ["topic", "handler"]
)
MESSAGES_PROCESSED = Counter(
    "tweetshop_messages_processed_total", "Messages whose handling committed", ["topic", "handler"]
)
MESSAGES_FAILED = Counter(
    "tweetshop_messages_failed_total", "Handler attempts that raised (each retry counts)", ["topic", "handler", "error"]
)
MESSAGES_DEAD_LETTERED = Counter(
    "tweetshop_messages_dead_lettered_total", "Messages parked on <topic>.dlq", ["topic", "handler"]
)
UNKNOWN_EVENT_TYPES_SKIPPED = Counter(
    "tweetshop_unknown_event_types_skipped_total",
    "Well-formed messages of an event type this consumer does not know (a newer producer)",
    ["topic", "event_type"],
)
MESSAGES_IGNORED = Counter(
    "tweetshop_messages_ignored_total",
    "Messages of a type of the topic the handler does not act on (@handles): skipped without an inbox row",
    ["topic", "handler"],
)
DUPLICATES_SKIPPED = Counter(
    "tweetshop_inbox_duplicates_skipped_total", "Messages skipped because their event_id was seen", ["topic", "handler"]
)
PROCESSING_SECONDS = Histogram(
    "tweetshop_message_processing_seconds",
    "Time from receiving a message to committing its effects",
    ["topic", "handler"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "tweetshop_consumer_batch_size",
    "Messages applied together in one transaction (one batch of a consumer)",
    ["topic", "handler"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
BATCHES_SPLIT = Counter(
    "tweetshop_consumer_batches_split_total",
    "Batches rolled back because one of their messages failed, then handled message by message",
    ["topic", "handler"],
)
OUTBOX_PUBLISHED = Counter("tweetshop_outbox_published_total", "Outbox events published to Kafka", ["topic"])
OUTBOX_PRUNED = Counter(
    "tweetshop_outbox_pruned_total", "Published outbox rows deleted after TWEETSHOP_OUTBOX_RETENTION_S"
)
OUTBOX_PUBLISH_ERRORS = Counter("tweetshop_outbox_publish_errors_total", "Failed outbox publish attempts")
OUTBOX_BACKLOG = Gauge("tweetshop_outbox_backlog", "Outbox events not yet published")
OUTBOX_OLDEST_AGE = Gauge("tweetshop_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row")
HTTP_REQUESTS = Counter("tweetshop_http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_SECONDS = Histogram(
    "tweetshop_http_request_seconds",
    "HTTP request duration",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
READY = Gauge("tweetshop_ready", "1 when the database and the broker answer", ["dependency"])
CONSUMER_LAG = Gauge(
    "tweetshop_consumer_lag",
    "Messages of a partition not yet committed by a consumer group (end offset minus committed offset)",
    ["group", "topic", "partition"],
)
CONSUMER_FETCH_WAIT = Gauge(
    "tweetshop_consumer_fetch_wait_seconds",
    "How long a consumer group's fetches wait at the broker now (longer while a consumer off the purchase's path "
    "finds nothing); set when it changes",
    ["group"],
)
CONSUMER_LAG_ERRORS = Counter(
    "tweetshop_consumer_lag_collection_errors_total", "Failed attempts to read committed and end offsets"
)
DLQ_MESSAGES = Gauge("tweetshop_dlq_messages", "Messages on a dead-letter topic (replayed ones included)", ["topic"])
DLQ_PENDING = Gauge(
    "tweetshop_dlq_pending_messages",
    "Messages on a dead-letter topic not yet replayed or dismissed with `tweetshop dlq`",
    ["topic"],
)
