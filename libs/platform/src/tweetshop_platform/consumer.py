"""Reliable subscribers: decode, handle in one transaction with the inbox, retry a bounded number of
times, park on ``<topic>.dlq``, and commit the offset only after all of that.

FastStream's default ACK_FIRST commits before the handler runs (at-most-once) and
NACK_ON_ERROR blocks the partition forever; so subscribers here use MANUAL acks.

Messages arrive in batches (FastStream's batch subscriber: what one ``getmany`` has, up
to ``batch_max_records``). A batch's events are applied in order in *one* transaction,
each with its inbox row, and the offsets are committed once after it: one durable
commit and one offset commit per batch instead of per message. When any event of the
batch fails, the whole transaction rolls back (nothing of the batch is half-applied)
and its events are handled one by one with the per-message rules: bounded retries,
then the DLQ. A crash anywhere redelivers the batch, and the inbox skips what was
already committed.

A handler declares the event types it acts on with ``@handles(...)``; the others of its topic are skipped by
their ``event_type`` header before the value is decoded, and without an inbox row (the inbox makes effects
idempotent: an event with no effect needs none). A batch of nothing but such events costs no transaction.

A handler may also have a form that applies a batch's events together (``@together(...)``): set-based
statements, one for many events instead of one or two per event. It must leave the database and the outbox as
the handler applied to each event in turn would; the subscriber calls it with the batch's new events, in order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import pydantic
import structlog
from aiokafka.errors import MessageSizeTooLargeError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from opentelemetry.trace import SpanKind, Tracer
from tweetshop_contracts import Envelope, decode_event
from tweetshop_contracts.events import event_types_of

from . import inbox, metrics, outbox, telemetry
from .kafka import TopicNames

log = structlog.get_logger(__name__)

Handler = Callable[[asyncpg.Connection, Any], Awaitable[None]]
BatchHandler = Callable[[asyncpg.Connection, list[Any]], Awaitable[None]]
AfterCommit = Callable[[Any], Awaitable[None]]
_H = TypeVar("_H", bound=Callable[..., Awaitable[None]])
_HANDLES = "__tweetshop_handles__"  # the attribute @handles sets: (topic, event type names)
_TOGETHER = "__tweetshop_together__"  # the attribute @together sets: the handler's form for several events


def handles(*events: type[Envelope]) -> Callable[[_H], _H]:
    """Declares the only event types a handler acts on; every other type its topic defines is skipped by the
    reliable subscriber without a transaction, an inbox row or a log line.

    The types must share one topic, and the subscriber refuses the handler for another topic. Only the topic's
    own types are ever skipped this way: a type the v1 contract does not define is still skipped and counted as
    unknown, and a value that cannot be decoded is still parked, unless its ``event_type`` header names a type
    the handler ignores (its value then never matters to this consumer, so it is not read).
    """
    topics = {event.TOPIC for event in events}
    if len(topics) != 1:
        raise ValueError(f"@handles takes event types of one topic, got {sorted(topics) or 'none'}")
    declared = (topics.pop(), frozenset(str(event.model_fields["event_type"].default) for event in events))

    def mark(handler: _H) -> _H:
        handler.__dict__[_HANDLES] = declared
        return handler

    return mark


def together(batch: BatchHandler) -> Callable[[_H], _H]:
    """Gives a handler a form that applies several events at once: ``batch(conn, events)``, called by the reliable
    subscriber with a batch's new events (the inbox dropped the duplicates), in order, in the batch's transaction.

    ``batch`` must leave the database and the outbox exactly as the handler applied to each event in turn would
    (tests hold the two side by side); it exists to say the same with fewer statements. With tracing on, the
    subscriber calls the handler per event instead, so each event keeps its own span.
    """

    def mark(handler: _H) -> _H:
        handler.__dict__[_TOGETHER] = batch
        return handler

    return mark


async def in_runs(
    conn: asyncpg.Connection,
    events: list[Any],
    kind: type[Envelope],
    run: Callable[[asyncpg.Connection, list[Any]], Awaitable[None]],
    one: Handler,
) -> None:
    """The events in order: each run of consecutive ``kind`` events in one call of ``run``, every other event
    to ``one``: the usual body of a ``@together`` form, when one event type is worth a set-based statement."""
    pending: list[Any] = []
    for event in events:
        if isinstance(event, kind):
            pending.append(event)
            continue
        if pending:
            await run(conn, pending)
            pending = []
        await one(conn, event)
    if pending:
        await run(conn, pending)


def batch_form(handler: object) -> BatchHandler | None:
    """The form ``@together`` gave ``handler``, if any."""
    return getattr(handler, _TOGETHER, None)


def handled_types(handler: object, topic: str) -> frozenset[str]:
    """The event types of ``topic`` that ``handler`` acts on: those it declared with ``@handles``, or all."""
    declared: tuple[str, frozenset[str]] | None = getattr(handler, _HANDLES, None)
    if declared is None:
        return event_types_of(topic)
    declared_topic, names = declared
    if declared_topic != topic:
        raise ValueError(f"{getattr(handler, '__name__', handler)!r} handles {declared_topic}, not {topic}")
    return names


# Errors that say "the database or network is gone", not "this message is bad":
# they are retried without limit (the partition waits) instead of dead-lettering good messages.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)


# What is kept of a message whose DLQ copy is too large for the producer or the broker.
_DLQ_VALUE_CUT_BYTES = 64 * 1024
_DLQ_HEADER_CUT_CHARS = 1000


class PermanentError(Exception):
    """A message that can never be handled (it is parked on the DLQ without retries)."""


# Errors that say "this message can never be applied, however often it is tried": parked at once, so a bad
# message holds its partition for one attempt, not for the bounded retries and their backoff (~3 s).
# asyncpg.DataError is SQLSTATE class 22 from the server (a value the column cannot take: out of an INT's
# range, too long, not a number), and also what asyncpg raises itself for an argument it cannot encode
# (2**31 for an INT parameter): the contract's integers are unbounded, checkout's columns are not.
# pydantic's ValidationError is an event the handler builds from the message's values refused by the contract
# (a batch form that writes at the end meets such a value there first, before the database does).
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (PermanentError, asyncpg.DataError, pydantic.ValidationError)


def _unknown_event_type(topic: str, value: bytes) -> str | None:
    """The event type of a well-formed message whose type the topic's v1 contract does not define."""
    try:
        raw = json.loads(value)
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    event_type = raw.get("event_type")
    if isinstance(event_type, str) and event_type and event_type not in event_types_of(topic):
        return event_type
    return None


def _decodable_headers(record: Any) -> Any:
    headers = record.headers or ()
    if all(_is_utf8(v) for _, v in headers):
        return record
    fixed = tuple((k, v.decode(errors="replace").encode() if isinstance(v, bytes) else b"") for k, v in headers)
    return dataclasses.replace(record, headers=fixed)


async def _parse_leniently(records: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """FastStream's parser, given headers it can decode: it reads every header value as UTF-8, and one
    value that is not (or a null one) made it drop the message before ``_consume`` ran: never parked, and
    its offset committed with the next message's. ``records``: a batch (a tuple) or one record."""
    if isinstance(records, tuple | list):  # a list from FastStream's test broker
        return await original(type(records)(_decodable_headers(r) for r in records))
    return await original(_decodable_headers(records))


def _is_utf8(value: object) -> bool:
    if not isinstance(value, bytes):
        return False
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


class FetchPacer:
    """How long a consumer's next fetch may wait at the broker: ``active_ms`` while records flow, ``quiet_ms`` once
    none came for ``quiet_after_s``; back to ``active_ms`` at the first record.

    On Tansu a fetch costs the broker (and aiokafka) about a millisecond of CPU whether data came or not, and the
    broker answers a waiting fetch only when its wait ends: the wait is both the consumer's latency floor and its
    polling interval. A consumer off the purchase's path (a read model, a shipment made after the payment, the
    live map) asks every ``quiet_ms`` while nothing happens, so a stack at rest polls a fraction as often; the
    first record after a quiet spell comes up to ``quiet_ms`` late, the next ones at ``active_ms``. The purchase
    path's consumers (``Group.purchase_path``) have no pacer: a single purchase on an idle stack is not slower.

    It sets aiokafka's ``Fetcher._fetch_max_wait_ms``, read for every fetch request the fetcher builds: a private
    attribute of the pinned aiokafka (0.14.0), held by a unit test so that a new release cannot drop it silently.
    """

    def __init__(
        self, *, active_ms: int, quiet_ms: int, quiet_after_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.active_ms = active_ms
        self.quiet_ms = max(quiet_ms, active_ms)
        self.quiet_after_s = quiet_after_s
        self._clock = clock
        self._last_record = clock()
        self.wait_ms = active_ms

    @classmethod
    def of(cls, active_ms: int, quiet_fetch: tuple[int, float] | None) -> FetchPacer | None:
        """The pacer of a consumer whose short wait is ``active_ms``; ``quiet_fetch``: (the wait in ms, after how many
        seconds without a record), as ``ServiceSettings.quiet_fetch`` gives it, or None: no pacer (never paced)."""
        if quiet_fetch is None:
            return None
        return cls(active_ms=active_ms, quiet_ms=quiet_fetch[0], quiet_after_s=quiet_fetch[1])

    def after(self, got_records: bool) -> int:
        """The wait for the next fetches, after a ``getmany`` that did (or did not) return records."""
        now = self._clock()
        if got_records:
            self._last_record = now
            self.wait_ms = self.active_ms
        elif now - self._last_record >= self.quiet_after_s:
            self.wait_ms = self.quiet_ms
        return self.wait_ms

    def apply(self, consumer: Any, got_records: bool) -> None:
        """Update ``consumer``'s (an AIOKafkaConsumer's) fetch wait after a ``getmany``."""
        wait_ms = self.after(got_records)
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is not None and fetcher._fetch_max_wait_ms != wait_ms:
            fetcher._fetch_max_wait_ms = wait_ms
            metrics.CONSUMER_FETCH_WAIT.labels(consumer._group_id or "").set(wait_ms / 1000)


async def _next_batch(
    consumer: Any, *, timeout_ms: int, max_records: int, pacer: FetchPacer | None = None
) -> tuple[Any, ...]:
    """The next records the consumer's fetcher has buffered, up to ``max_records``; stands in for FastStream's
    ``BatchSubscriber.get_msg``, which after an empty wait sleeps ``timeout_ms`` once more.

    ``getmany`` returns as soon as records arrive, so a long ``timeout_ms`` costs no latency; only wake-ups at
    rest. FastStream's extra sleep did: it made a short timeout necessary, and ten consumers each waking 50 times a
    second were most of what a service burnt while nothing happened. An empty tuple: the loop asks again.
    ``pacer``: lengthens the consumer's fetch wait while it finds nothing (``FetchPacer``).
    """
    batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
    records = tuple(itertools.chain.from_iterable(batches.values()))
    if pacer is not None:
        pacer.apply(consumer, bool(records))
    return records


async def _the_message(msg: Any) -> Any:
    """FastStream's "decoded" message is the message itself (its batch of records): decoding is ``_consume``'s job.
    FastStream's own decoder raised (and so dropped the message unparked) on garbage under a JSON content-type, deep
    nesting and numbers past the digit limit. Handing the message over this way, ``_consume`` needs no injected
    ``KafkaMessage`` parameter: FastStream's dependency injection resolved that annotation in a worker thread for
    every batch (``anyio.to_thread``: 4-5 % of a consumer-heavy service's CPU in the orders benchmark's profile),
    and the runtime's broker does without it (``kafka.create_broker``: ``apply_types=False``)."""
    return msg


def _header(headers: dict[str, Any], name: str) -> str:
    value = headers.get(name, "")
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(frozen=True)
class _Delivery:
    """One record of a batch, decoded."""

    record: Any  # aiokafka's ConsumerRecord
    value: bytes
    headers: dict[str, Any]
    event: Envelope

    def bound(self) -> Any:
        e = self.event
        return structlog.contextvars.bound_contextvars(
            correlation_id=e.correlation_id, event_id=str(e.event_id), event_type=e.event_type
        )


class ReliableSubscriber:
    """Binds one handler to one topic in one group: docs/architecture.md#inbox-and-reliable-consumers."""

    def __init__(
        self,
        *,
        broker: KafkaBroker,
        pool: asyncpg.Pool,
        topics: TopicNames,
        topic: str,
        group_id: str,
        handler: Handler,
        after_commit: AfterCommit | None = None,
        max_retries: int = 5,
        retry_backoff: float = 0.2,
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        quiet_fetch: tuple[int, float] | None = None,
        batch_max_records: int = 100,
        batch_timeout_ms: int = 1000,
        tracer: Tracer | None = None,
    ) -> None:
        """``quiet_fetch``: (the fetch wait in ms, after how many seconds without a record) of a consumer off the
        purchase's path (``FetchPacer``); None: always ``fetch_max_wait_ms``. ``fetch_min_bytes``: what a fetch
        waits for before the broker answers it ahead of its wait (``ServiceSettings.kafka_fetch_min_bytes``)."""
        self.topic = topic
        self._tracer = tracer  # None: tracing off
        self.group_id = group_id
        self.handler_name = getattr(handler, "__name__", "handler")
        self._broker = broker
        self._pool = pool
        self._topics = topics
        self._handler = handler
        self._together = batch_form(handler)
        self._after_commit = after_commit
        self._max_retries = max_retries
        self._retry_backoff = retry_backoff
        # The per-message series, looked up once (labels() takes a lock and a dict lookup per call).
        labels = (topic, self.handler_name)
        self._received = metrics.MESSAGES_RECEIVED.labels(*labels)
        self._processed = metrics.MESSAGES_PROCESSED.labels(*labels)
        self._duplicates = metrics.DUPLICATES_SKIPPED.labels(*labels)
        self._seconds = metrics.PROCESSING_SECONDS.labels(*labels)
        self._ignored_count = metrics.MESSAGES_IGNORED.labels(*labels)
        # The topic's types the handler does not act on; as header values too, compared before any decoding.
        self._ignored = event_types_of(topic) - handled_types(handler, topic)
        self._ignored_headers = frozenset({*self._ignored, *(t.encode() for t in self._ignored)})
        subscriber = broker.subscriber(
            topics.physical(topic),
            group_id=group_id,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_min_bytes=fetch_min_bytes,
            # What the fetcher has buffered, up to batch_max_records (see _next_batch, which replaces FastStream's).
            batch=True,
            max_records=batch_max_records,
            batch_timeout_ms=batch_timeout_ms,
            ack_policy=AckPolicy.MANUAL,
            parser=_parse_leniently,
            decoder=_the_message,
            # Never answer a message's `reply_to` header: any producer could make us publish to a topic of its
            # choosing (an empty message was injected), and an invalid name flooded the log with metadata errors.
            no_reply=True,
            title=f"{group_id}:{topic}",
            description=f"{self.handler_name} in consumer group {group_id}",
        )
        subscriber(self._consume)
        self.pacer = FetchPacer.of(fetch_max_wait_ms, quiet_fetch)
        next_batch = functools.partial(
            _next_batch, timeout_ms=batch_timeout_ms, max_records=batch_max_records, pacer=self.pacer
        )
        subscriber.get_msg = next_batch  # type: ignore[method-assign]

    async def _consume(self, msg: Any) -> None:
        """``msg``: FastStream's message of a batch (``_the_message``), whose ``raw_message`` holds its records."""
        raw = msg.raw_message
        records: tuple[Any, ...] = tuple(raw) if isinstance(raw, tuple | list) else (raw,)
        deliveries: list[_Delivery] = []
        for record in records:
            delivery = await self._decode(record)
            if delivery is not None:
                deliveries.append(delivery)
        if deliveries:
            await self._apply(deliveries)
        # Every record of the batch is applied, skipped or parked: only now are the offsets committed.
        await msg.ack()

    async def _decode(self, record: Any) -> _Delivery | None:
        """The record's event; None when it was parked (undecodable) or skipped (an unknown event type, or a
        type the handler does not act on)."""
        self._received.inc()
        value: bytes = record.value or b""
        headers = {k: v for k, v in (record.headers or ())}
        if self._ignored_headers and headers.get("event_type") in self._ignored_headers:
            self._ignored_count.inc()  # not the handler's business: not even decoded
            return None
        try:
            event = decode_event(self.topic, value)
        except ValueError as exc:
            # The header still ties an undecodable message to its order in the logs.
            correlation = {"correlation_id": c} if (c := _header(headers, "correlation_id")) else {}
            with structlog.contextvars.bound_contextvars(**correlation):
                unknown = _unknown_event_type(self.topic, value)
                if unknown is not None:
                    # A newer producer's event type this consumer does not know: adding types is a compatible
                    # change, so it is skipped (and counted), not parked.
                    metrics.UNKNOWN_EVENT_TYPES_SKIPPED.labels(self.topic, unknown[:100]).inc()
                    log.warning("unknown event type skipped", topic=self.topic, event_type=unknown)
                else:
                    await self._dead_letter(record, value, headers, exc, attempts=1)
            return None
        if event.event_type in self._ignored:  # its header was missing or said otherwise
            self._ignored_count.inc()
            return None
        return _Delivery(record, value, headers, event)

    async def _apply(self, deliveries: list[_Delivery]) -> None:
        started = time.perf_counter()
        labels = (self.topic, self.handler_name)
        if len(deliveries) > 1:
            try:
                applied = await self.handle_batch([d.event for d in deliveries], deliveries)
            except Exception as exc:
                # Rolled back whole: handle them one by one, so only the bad one is retried and parked.
                metrics.BATCHES_SPLIT.labels(*labels).inc()
                log.warning(
                    "batch failed; handling its messages one by one",
                    topic=self.topic,
                    group=self.group_id,
                    size=len(deliveries),
                    error=repr(exc),
                )
            else:
                metrics.BATCH_SIZE.labels(*labels).observe(len(deliveries))
                elapsed = time.perf_counter() - started
                for delivery, was_applied in zip(deliveries, applied, strict=True):
                    with delivery.bound():
                        await self._handled(delivery.event, was_applied, attempts=1)
                    self._seconds.observe(elapsed)
                return
        for delivery in deliveries:
            with delivery.bound():
                await self._handle_with_retries(delivery)
            self._seconds.observe(time.perf_counter() - started)

    async def _handle_with_retries(self, delivery: _Delivery) -> None:
        labels = (self.topic, self.handler_name)
        attempt = 0
        transient_delay = self._retry_backoff
        while True:
            attempt += 1
            try:
                applied = (await self.handle_batch([delivery.event], [delivery]))[0]
            except TRANSIENT_ERRORS as exc:
                metrics.MESSAGES_FAILED.labels(*labels, type(exc).__name__).inc()
                log.warning("transient failure; retrying", error=repr(exc), retry_in=transient_delay)
                await asyncio.sleep(transient_delay)
                transient_delay = min(transient_delay * 2, 10)
                attempt -= 1
                continue
            except Exception as exc:
                metrics.MESSAGES_FAILED.labels(*labels, type(exc).__name__).inc()
                if isinstance(exc, PERMANENT_ERRORS) or attempt > self._max_retries:
                    await self._dead_letter(delivery.record, delivery.value, delivery.headers, exc, attempts=attempt)
                    return
                log.warning("handler failed; retrying", error=repr(exc), attempt=attempt)
                await asyncio.sleep(self._retry_backoff * attempt)
                continue
            await self._handled(delivery.event, applied, attempts=attempt)
            return

    async def _handled(self, event: Envelope, applied: bool, *, attempts: int) -> None:
        """After the commit: count, log, and run the after-commit hook of an applied event."""
        if applied:
            self._processed.inc()
            # One line per business event handled: with correlation_id bound, one grep follows an order.
            log.info("event handled", topic=self.topic, group=self.group_id, attempts=attempts)
            if self._after_commit is not None:
                try:
                    await self._after_commit(event)
                except Exception as exc:  # a wake-up hint only: the committed state is the truth
                    log.warning("after-commit hook failed", error=repr(exc))
        else:
            self._duplicates.inc()
            log.info("duplicate event skipped", topic=self.topic, group=self.group_id)

    async def handle(self, event: Envelope) -> bool:
        """Apply one event in one transaction with its inbox row; False if it was a duplicate."""
        return (await self.handle_batch([event]))[0]

    async def handle_batch(self, events: list[Envelope], deliveries: list[_Delivery] | None = None) -> list[bool]:
        """Apply events in order in one transaction, each with its inbox row; per event, False if a duplicate
        (also of an earlier event of the same batch). Any error rolls back all of them.

        ``deliveries``: the records the events came in (with tracing on, each handler runs in a CONSUMER span,
        child of the trace context in its record's headers). A handler with a ``@together`` form gets the new
        events in one call (tracing off)."""
        async with self._pool.acquire() as conn, conn.transaction(), outbox.batched(conn):
            # What the handlers enqueue goes into the outbox at the end, in one statement (outbox.batched).
            claimed = await inbox.claim_many(conn, self.group_id, events)
            if self._together is not None and self._tracer is None:
                fresh = [event for event, new in zip(events, claimed, strict=True) if new]
                if fresh:
                    await self._together(conn, fresh)
            else:
                for i, (event, new) in enumerate(zip(events, claimed, strict=True)):
                    if not new:
                        continue
                    if self._tracer is None:
                        await self._handler(conn, event)
                    else:
                        await self._handle_traced(conn, event, deliveries[i] if deliveries else None)
        return claimed

    async def _handle_traced(self, conn: asyncpg.Connection, event: Envelope, delivery: _Delivery | None) -> None:
        """The handler in a CONSUMER span (``process <topic>``), child of the record's ``traceparent``."""
        assert self._tracer is not None
        record = delivery.record if delivery is not None else None
        physical = self._topics.physical(self.topic)
        with (
            self._tracer.start_as_current_span(
                f"process {physical}",
                context=telemetry.context_of_headers(delivery.headers) if delivery is not None else None,
                kind=SpanKind.CONSUMER,
                attributes=telemetry.messaging_attributes(
                    "process",
                    physical,
                    event.key(),
                    **{
                        "messaging.consumer.group.name": self.group_id,
                        "messaging.message.id": str(event.event_id),
                        "messaging.destination.partition.id": str(record.partition) if record is not None else None,
                        "messaging.kafka.offset": record.offset if record is not None else None,
                        "tweetshop.event_type": event.event_type,
                        "tweetshop.correlation_id": event.correlation_id,
                    },
                ),
            ) as span,
            telemetry.logged(span),
        ):
            # Work this event wakes elsewhere in the process (checkout's payment worker) continues this trace.
            telemetry.remember(self.topic, event.key())
            await self._handler(conn, event)

    async def _dead_letter(
        self, raw: Any, value: bytes, headers: dict[str, Any], exc: BaseException, *, attempts: int
    ) -> None:
        dlq_headers = {k: _header(headers, k) for k in headers}
        dlq_headers.update(
            {
                "dlq_error": str(exc)[:2000] or type(exc).__name__,
                "dlq_error_type": type(exc).__name__,
                "dlq_original_topic": self.topic,
                "dlq_original_partition": str(raw.partition),
                "dlq_original_offset": str(raw.offset),
                "dlq_consumer_group": self.group_id,
                "dlq_attempts": str(attempts),
                "dlq_failed_at": datetime.now(UTC).isoformat(),
            }
        )
        key = raw.key
        # Publishing the DLQ copy must succeed before the offset is committed: retry until it does.
        delay = self._retry_backoff
        while True:
            try:
                await self._broker.publish(
                    value,
                    self._topics.dlq(self.topic),
                    key=key,
                    headers=dlq_headers,
                    correlation_id=dlq_headers.get("correlation_id") or None,
                )
                break
            except MessageSizeTooLargeError as too_large:
                # The same bytes can never fit (the copy carries more headers than the original): park a cut
                # copy, marked, rather than stall the partition. The original stays on the topic (by offset).
                log.error("message too large for the DLQ; parking a truncated copy", error=repr(too_large))
                cut = _DLQ_VALUE_CUT_BYTES if "dlq_value_truncated_from" not in dlq_headers else 0
                dlq_headers = {k: v[:_DLQ_HEADER_CUT_CHARS] for k, v in dlq_headers.items()}
                dlq_headers["dlq_value_truncated_from"] = str(len(raw.value or b""))
                value = value[:cut]
            except Exception as publish_error:
                log.error("could not park message on DLQ; retrying", error=repr(publish_error))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        metrics.MESSAGES_DEAD_LETTERED.labels(self.topic, self.handler_name).inc()
        log.error(
            "message parked on dead-letter topic",
            topic=self.topic,
            dlq=self._topics.dlq(self.topic),
            error=str(exc),
            error_type=type(exc).__name__,
            attempts=attempts,
        )
