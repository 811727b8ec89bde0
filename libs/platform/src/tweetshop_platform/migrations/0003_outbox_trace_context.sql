-- The W3C trace context current when the row's events were enqueued ({"traceparent": ..., "tracestate": ...}),
-- when tracing is on (telemetry.py): the relay publishes later, from another task, and sends it on as Kafka
-- headers, so a purchase stays one trace across the hop. NULL: enqueued with tracing off, or outside any span.
ALTER TABLE outbox ADD COLUMN trace_context JSONB;
