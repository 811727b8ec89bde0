"""Transactional outbox: events are written in the state change's transaction; a relay publishes them.

Delivery is at least once: a crash between publishing and marking republishes
the rows, and consumers drop the duplicates by ``event_id`` (see inbox.py).
One relay per service is active at a time (a session advisory lock), so rows
are published in commit order and one aggregate's events keep their order.

Events enqueued together that share topic, key, type and correlation id (a
courier's batch of fixes) share one row, up to ``MAX_EVENTS_PER_ROW``: the first
in ``event_id``/``payload``, the rest in ``more_event_ids``/``more_payloads``.
Each is still its own Kafka message with its own event id.

A reliable subscriber applies a batch of messages in one transaction inside ``batched(conn)``: what its
handlers enqueue goes into the outbox together at the end of the batch (one statement instead of one per
event), and ``enqueue_newest`` keeps only the last of an aggregate's full states (catalog's ``ProductUpdated``
after each of a batch's reservations: subscribers keep the newest version anyway, so one per batch says it all).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Hashable, Sequence
from contextvars import ContextVar
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from tweetshop_contracts import Envelope

from . import db, faults, metrics, telemetry
from .kafka import TopicNames

log = structlog.get_logger(__name__)

_RELAY_LOCK = 7_210_003
_YIELD_EVERY = 200  # events the relay sends before it lets other tasks run
MAX_EVENTS_PER_ROW = 100


def _channel(schema: str) -> str:
    return f"outbox_{schema}"


# Events kept by ``batched`` until its block ends, each with the trace it was enqueued in; keyed by a fresh
# object, or by (topic, key) for ``enqueue_newest``. None: no batch, ``enqueue`` writes at once.
_BATCH: ContextVar[dict[Hashable, tuple[Envelope, str | None]] | None] = ContextVar("outbox_batch", default=None)


@contextlib.asynccontextmanager
async def batched(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Within the block (in the caller's transaction), ``enqueue`` keeps the events and they go into the outbox
    in one go when it ends without an error, in the order they were enqueued; an error discards them (the
    transaction rolls back anyway). Nested, the inner block joins the outer one."""
    if _BATCH.get() is not None:
        yield
        return
    kept: dict[Hashable, tuple[Envelope, str | None]] = {}
    token = _BATCH.set(kept)
    try:
        yield
    finally:
        _BATCH.reset(token)
    await _write(conn, list(kept.values()))


async def enqueue(conn: asyncpg.Connection, *events: Envelope) -> None:
    """Add events to the outbox inside the caller's transaction, and wake the relay when it commits.

    Rows get their ids in the given order. A run of events with the same topic, key, type and correlation
    id is one row (one statement each); the other events go in together, in one statement. Within
    ``batched``, at the end of its block.
    """
    # The trace this happens in (tracing on), stored with the rows: the relay publishes them from another task.
    trace_context = telemetry.current_carrier() if telemetry.active else None
    kept = _BATCH.get()
    if kept is None:
        await _write(conn, [(event, trace_context) for event in events])
        return
    for event in events:
        kept[object()] = (event, trace_context)


async def enqueue_newest(conn: asyncpg.Connection, event: Envelope) -> None:
    """``enqueue`` an aggregate's full new state; within ``batched``, it replaces the state of the same
    aggregate (topic and key) enqueued earlier in the block, and takes its place after what came in between.

    Only for events each of which says everything (a read model keeps the newest version and needs no other):
    readers then see fewer versions of the aggregate, never a wrong or older one.
    """
    kept = _BATCH.get()
    if kept is None:
        await enqueue(conn, event)
        return
    key = (event.topic(), event.key())
    kept.pop(key, None)
    kept[key] = (event, telemetry.current_carrier() if telemetry.active else None)


async def _write(conn: asyncpg.Connection, items: Sequence[tuple[Envelope, str | None]]) -> None:
    """The rows of ``items`` (each event with its trace context), in order."""
    singles: list[tuple[Envelope, str | None]] = []
    for run in _runs(items):
        if len(run) == 1:
            singles.extend(run)
            continue
        await _insert_singles(conn, singles)
        singles = []
        first, trace_context = run[0]
        await conn.execute(
            """WITH added AS (
                   INSERT INTO outbox (event_id, topic, message_key, event_type, correlation_id, payload,
                                       more_event_ids, more_payloads, trace_context)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
               )
               SELECT pg_notify('outbox_' || current_schema(), '')""",
            first.event_id,
            first.topic(),
            first.key(),
            first.event_type,
            first.correlation_id,
            first.to_bytes(),
            [e.event_id for e, _ in run[1:]],
            [e.to_bytes() for e, _ in run[1:]],
            trace_context,
        )
    await _insert_singles(conn, singles)


def _runs(items: Sequence[tuple[Envelope, str | None]]) -> list[list[tuple[Envelope, str | None]]]:
    """The events in order, cut into runs that can share a row (one trace context: the run's first)."""
    runs: list[list[tuple[Envelope, str | None]]] = []
    previous: tuple[str, str, str, str, str | None] | None = None
    for event, trace_context in items:
        shared = (event.topic(), event.key(), event.event_type, event.correlation_id, trace_context)
        if shared == previous and len(runs[-1]) < MAX_EVENTS_PER_ROW:
            runs[-1].append((event, trace_context))
        else:
            runs.append([(event, trace_context)])
            previous = shared
    return runs


def _singles_insert(first: int, where: str = "", *, variants: bool = False) -> str:
    """An INSERT of one outbox row per event, in their order, from the seven arrays ``_singles_args`` makes, which
    are the statement's parameters from ``$first`` on; ``where`` filters the rows (SQL). ``variants``: an eighth
    array follows, an integer per event, which ``where`` may use as ``e.variant``."""
    p = [f"${first + i}" for i in range(8)]
    variant_array, variant_column = (f", {p[7]}::int[]", " variant,") if variants else ("", "")
    return f"""INSERT INTO outbox (event_id, topic, message_key, event_type, correlation_id, payload, trace_context)
               SELECT event_id, topic, message_key, event_type, correlation_id, payload, trace_context
               FROM unnest({p[0]}::uuid[], {p[1]}::text[], {p[2]}::text[], {p[3]}::text[], {p[4]}::text[],
                           {p[5]}::bytea[], {p[6]}::jsonb[]{variant_array})
                    WITH ORDINALITY AS e(event_id, topic, message_key, event_type, correlation_id, payload,
                                         trace_context,{variant_column} n)
               {where}
               ORDER BY n"""


def _singles_args(items: Sequence[tuple[Envelope, str | None]]) -> list[list[Any]]:
    events = [e for e, _ in items]
    return [
        [e.event_id for e in events],
        [e.topic() for e in events],
        [e.key() for e in events],
        [e.event_type for e in events],
        [e.correlation_id for e in events],
        [e.to_bytes() for e in events],
        [trace_context for _, trace_context in items],
    ]


_INSERT_SINGLES = f"""WITH added AS ({_singles_insert(1)})
    SELECT pg_notify('outbox_' || current_schema(), '')"""


async def _insert_singles(conn: asyncpg.Connection, items: Sequence[tuple[Envelope, str | None]]) -> None:
    """One row per event, in one statement (one round trip) however many there are."""
    if not items:
        return
    await conn.execute(_INSERT_SINGLES, *_singles_args(items))


@functools.lru_cache(maxsize=64)
def _write_then_enqueue_sql(write: str, arguments: int, variants: bool, before: str) -> str:
    if variants:
        where = "WHERE e.variant = (SELECT w.variant FROM written AS w LIMIT 1)"
    else:
        where = "WHERE EXISTS (SELECT FROM written)"
    return f"""WITH {before + "," if before else ""} written AS ({write}),
            added AS ({_singles_insert(arguments + 1, where, variants=variants)} RETURNING 1)
        SELECT w.*, CASE WHEN EXISTS (SELECT FROM added) THEN pg_notify('outbox_' || current_schema(), '') END
               AS outbox_woken
        FROM written AS w LIMIT 1"""


async def write_then_enqueue(
    conn: asyncpg.Connection,
    write: str,
    arguments: Sequence[object],
    events: Sequence[Envelope],
    *,
    variants: Sequence[int] | None = None,
    before: str = "",
) -> asyncpg.Record | None:
    """``write`` and, only if it returned a row, ``events`` into the outbox (one row each, in order) with the
    relay's wake-up: one statement, so both or neither, with or without a transaction around it. Returns the
    (first) row ``write`` returned, or None.

    ``write`` is an INSERT, UPDATE or DELETE with a RETURNING clause whose parameters are ``arguments`` ($1 on).
    Outside a transaction this is a state change and its events in one round trip: no ``BEGIN``, no ``COMMIT``,
    no statement of the outbox's own (a compare-and-set on a row, say, whose events depend on it alone).

    ``variants``: the events are alternatives, one integer each, and the ``variant`` column of the row ``write``
    returns picks those that go in: for events that depend on what the write did (an order placed with units
    from an allocation, or without).

    ``before``: common table expressions ``write`` uses (``name AS (...), ...``, without ``WITH``): Postgres allows
    data-modifying ones only at the statement's top level, so they go there, ahead of it.

    Not within ``batched``: the batch writes its events at its end, and these would come before them.
    """
    if _BATCH.get() is not None:
        raise RuntimeError("write_then_enqueue within outbox.batched: enqueue the events instead")
    if variants is not None and len(variants) != len(events):
        raise ValueError("one variant per event")
    trace_context = telemetry.current_carrier() if telemetry.active else None
    columns = _singles_args([(event, trace_context) for event in events])
    return await conn.fetchrow(
        _write_then_enqueue_sql(write, len(arguments), variants is not None, before),
        *arguments,
        *columns,
        *([] if variants is None else [list(variants)]),
    )


async def prune_published(conn: asyncpg.Connection, older_than_s: float, *, window: int = 10_000) -> int:
    """Delete outbox rows published more than ``older_than_s`` ago, among the ``window`` oldest rows by id.

    Rows are published in id order, so the oldest ids are the oldest published: looking only at the first
    ``window`` of them keeps each call one short index scan, however large the table. Unpublished rows are
    never touched. Returns how many rows went.
    """
    status = await conn.execute(
        """WITH oldest AS (SELECT id, published_at FROM outbox ORDER BY id LIMIT $2)
           DELETE FROM outbox o USING oldest
           WHERE o.id = oldest.id AND oldest.published_at < now() - make_interval(secs => $1)""",
        older_than_s,
        window,
    )
    return int(status.split()[-1])


class OutboxRelay:
    """Publishes unpublished outbox rows in order and marks them; wakes on NOTIFY, polls as a fallback."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        topics: TopicNames,
        schema: str,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        retention_s: float = 0,
        prune_interval_s: float = 60,
        round_interval: float = 0,
        tracer: Tracer | None = None,
    ) -> None:
        """``round_interval``: the least seconds between the starts of two rounds while each finds events to publish
        (``ServiceSettings.outbox_round_interval_ms``); a round after one that found none, or after a full batch
        (a backlog), starts at once."""
        self._pool = pool
        self._tracer = tracer  # None: tracing off
        self._producer = producer
        self._topics = topics
        self._schema = schema
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._round_interval = round_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._backlog_recorded = 0.0
        self._retention_s = retention_s
        self._prune_interval_s = prune_interval_s
        self._pruned_at = time.monotonic()
        # A malformed crash-point setting stops start-up here rather than every batch later.
        if faults.active_points():
            log.warning("fault injection is on", points=faults.active_points())

    def start(self) -> None:
        """Run the relay in the background."""
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._schema}")

    async def stop(self) -> None:
        """Stop after the batch in flight."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_notify(self, *_: Any) -> None:
        self._wake.set()

    async def _run(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                async with self._pool.acquire() as conn:
                    await self._lead(conn)
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.OUTBOX_PUBLISH_ERRORS.inc()
                log.warning("outbox relay error; retrying", error=repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    async def _lead(self, conn: asyncpg.Connection) -> None:
        # Only the replica holding the lock relays; the others wait to take over.
        db.holds_session_state(conn)
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", _RELAY_LOCK, self._schema):
            await asyncio.sleep(2)
        await conn.add_listener(_channel(self._schema), self._on_notify)
        try:
            while not self._stopping:
                # Cleared before the batch is read, not after: a NOTIFY that comes while a batch is being
                # published must wake the next round, not be wiped out (it was, and its rows then waited for
                # the next commit or the poll, up to poll_interval).
                self._wake.clear()
                started = time.monotonic()
                published = await self.publish_pending(conn)
                await self._maybe_prune(conn)
                if published < self._batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_interval)
                    if published:
                        await self._pace(started)
        finally:
            await conn.remove_listener(_channel(self._schema), self._on_notify)
            await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", _RELAY_LOCK, self._schema)

    async def _pace(self, started: float) -> None:
        """After a round that published a partial batch: under load a NOTIFY comes with nearly every commit, and a
        round per NOTIFY stores a few events per batch on the broker. Let what comes until ``round_interval`` after
        this round's start gather for the next. Idle, the wake-up comes later than that and nothing waits."""
        rest = started + self._round_interval - time.monotonic()
        if rest > 0:
            await asyncio.sleep(rest)

    async def publish_pending(self, conn: asyncpg.Connection) -> int:
        """Publish one batch (about ``batch_size`` events) and mark it; returns how many events were published."""
        # Rows in id order until they hold batch_size events (the row that crosses it included).
        rows = await conn.fetch(
            """SELECT id, topic, message_key, event_type, correlation_id, payload, more_payloads, trace_context,
                      EXTRACT(EPOCH FROM now() - created_at) AS age_s FROM (
                   SELECT id, topic, message_key, event_type, correlation_id, payload, more_payloads, trace_context,
                          created_at, sum(1 + coalesce(cardinality(more_payloads), 0)) OVER (ORDER BY id) AS upto,
                          1 + coalesce(cardinality(more_payloads), 0) AS events
                   FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1
               ) pending
               WHERE upto - events < $1""",
            self._batch_size,
        )
        payloads_of = [[row["payload"], *(row["more_payloads"] or ())] for row in rows]  # each row's events, in order
        events = sum(len(payloads) for payloads in payloads_of)
        if events < self._batch_size:
            # Short of a full batch, these rows are the whole backlog (the LIMIT cut nothing): no query counts it.
            self._backlog_recorded = time.monotonic()
            metrics.OUTBOX_BACKLOG.set(events)
            metrics.OUTBOX_OLDEST_AGE.set(max((float(r["age_s"]) for r in rows), default=0.0))
        elif time.monotonic() - self._backlog_recorded >= 1.0:
            # Counting the backlog walks all of it: at most once a second, or it slows the relay most when behind.
            await self._record_backlog(conn)
        if not rows:
            return 0
        futures: list[asyncio.Future[Any]] = []
        spans: list[Span] = []
        for row, payloads in zip(rows, payloads_of, strict=True):
            headers = [
                ("event_type", row["event_type"].encode()),
                ("content-type", b"application/json"),
                ("correlation_id", row["correlation_id"].encode()),
            ]
            topic, key = self._topics.physical(row["topic"]), row["message_key"].encode()
            if self._tracer is not None:
                spans.append(self._publish_span(row, topic, len(payloads)))
                headers += telemetry.headers_of(spans[-1])
            for payload in payloads:
                if futures and len(futures) % _YIELD_EVERY == 0:
                    # send() returns without suspending while a batch has room: a round of 2,000 events would
                    # hold the event loop for tens of ms, and the service's HTTP requests would wait behind it.
                    await asyncio.sleep(0)
                futures.append(await self._producer.send(topic, bytes(payload), key=key, headers=headers))
        # Wait for every broker ack before marking: an unacked row stays unpublished and is sent again.
        try:
            await asyncio.gather(*futures)
        except BaseException as exc:
            for span in spans:
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                span.set_attribute("error.type", type(exc).__qualname__)
            raise
        finally:
            for span in spans:
                span.end()
        # Chaos tests only (off by default): die between publishing and marking, the redelivery case.
        faults.maybe_crash("outbox_after_publish")
        await conn.execute(
            "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
        )
        for row, payloads in zip(rows, payloads_of, strict=True):
            metrics.OUTBOX_PUBLISHED.labels(row["topic"]).inc(len(payloads))
        return events

    def _publish_span(self, row: asyncpg.Record, topic: str, events: int) -> Span:
        """A PRODUCER span for one row's messages, child of the span that enqueued them (when there was one)."""
        assert self._tracer is not None
        return self._tracer.start_span(
            f"send {topic}",
            context=telemetry.context_of_carrier(row["trace_context"]),
            kind=SpanKind.PRODUCER,
            attributes=telemetry.messaging_attributes(
                "send",
                topic,
                row["message_key"],
                **{
                    "messaging.batch.message_count": events if events > 1 else None,
                    "tweetshop.event_type": row["event_type"],
                    "tweetshop.correlation_id": row["correlation_id"],
                },
            ),
        )

    async def _maybe_prune(self, conn: asyncpg.Connection) -> None:
        """Now and then, delete rows published longer ago than the retention (0: keep them all)."""
        if self._retention_s <= 0 or time.monotonic() - self._pruned_at < self._prune_interval_s:
            return
        self._pruned_at = time.monotonic()
        deleted = await prune_published(conn, self._retention_s)
        if deleted:
            metrics.OUTBOX_PRUNED.inc(deleted)
            log.info("published outbox rows pruned", rows=deleted, older_than_s=self._retention_s)

    async def _record_backlog(self, conn: asyncpg.Connection) -> None:
        self._backlog_recorded = time.monotonic()
        row = await conn.fetchrow(
            """SELECT coalesce(sum(1 + coalesce(cardinality(more_payloads), 0)), 0) AS n,
                      EXTRACT(EPOCH FROM now() - min(created_at)) AS age
               FROM outbox WHERE published_at IS NULL"""
        )
        assert row is not None
        metrics.OUTBOX_BACKLOG.set(row["n"])
        metrics.OUTBOX_OLDEST_AGE.set(float(row["age"] or 0))
