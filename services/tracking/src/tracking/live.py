"""Live updates: one Kafka subscription per process feeds an in-memory hub; each watcher gets a bounded mailbox.

Every tracking replica reads tracking.locations.v1 and tracking.shipments.v1 in
its own consumer group (docs/architecture.md#scaling-out), so whichever replica a
browser's stream lands on sees every update. A watcher that reads too slowly
loses its stalest fixes, never its newest position, a status change or the
process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from tweetshop_contracts import (
    TOPIC_EVENTS,
    Envelope,
    ShipmentCreated,
    ShipmentLocationUpdated,
    ShipmentStatusChanged,
)
from tweetshop_platform.consumer import FetchPacer
from tweetshop_platform.kafka import TopicNames

from . import domain, metrics
from .domain import Point, Shipment

log = structlog.get_logger(__name__)

LiveEvent = ShipmentLocationUpdated | ShipmentStatusChanged
# A key as str(uuid.UUID) writes it; other spellings of an id are parsed.
_CANONICAL_KEY = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Pending:
    """What a watcher was not shown yet: location fixes oldest first, whether a status changed, whether to end."""

    locations: list[ShipmentLocationUpdated]
    status_changed: bool
    closed: bool


class Mailbox:
    """One watcher's undelivered updates, bounded, coalesced while the watcher is busy writing.

    Full, it drops the fix recorded earliest (usually the first to arrive, but not
    when a courier's batches commit out of order): the newest position always
    survives. A status change is a flag, not a slot, so no flood of fixes can push
    it out, and the hub's closing is one too.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._locations: list[ShipmentLocationUpdated] = []
        self._status_changed = False
        self._closed = False
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._locations) + self._status_changed + self._closed

    def put(self, event: LiveEvent) -> None:
        if isinstance(event, ShipmentLocationUpdated):
            self._locations.append(event)
            if len(self._locations) > self._size:
                stalest = min(range(len(self._locations)), key=lambda i: self._locations[i].recorded_at)
                del self._locations[stalest]
                metrics.LIVE_UPDATES_DROPPED.inc()
        else:
            self._status_changed = True
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def wait(self) -> None:
        """Until something is pending."""
        await self._ready.wait()

    def take(self) -> Pending:
        """Everything pending, emptied out."""
        pending = Pending(sorted(self._locations, key=lambda e: e.recorded_at), self._status_changed, self._closed)
        self._locations = []
        self._status_changed = False
        if not self._closed:
            self._ready.clear()
        return pending


class LiveHub:
    """Fans one stream of events out to the watchers of each shipment."""

    def __init__(self, queue_size: int = 64) -> None:
        self._queue_size = queue_size
        self._watchers: dict[uuid.UUID, set[Mailbox]] = {}
        # The watched ids as the Kafka keys tracking writes (str(uuid)): most keys are answered without a parse.
        self._watched_keys: set[bytes] = set()
        self._count = 0
        self.closed = False

    def watcher_count(self, shipment_id: uuid.UUID | None = None) -> int:
        """Open watchers of one shipment, or of all."""
        if shipment_id is not None:
            return len(self._watchers.get(shipment_id, ()))
        return self._count

    def is_watched(self, key: bytes | None) -> bool:
        """Whether a message with this Kafka key (a shipment id) has a watcher here; unknown keys count as watched."""
        if not key:
            return True
        if key in self._watched_keys:
            return True
        if _CANONICAL_KEY.fullmatch(key):
            return False
        try:
            return uuid.UUID(key.decode("ascii")) in self._watchers
        except (UnicodeDecodeError, ValueError):
            return True

    @contextlib.contextmanager
    def watch(self, shipment_id: uuid.UUID) -> Iterator[Mailbox]:
        """A mailbox that receives the shipment's updates until the block ends (or the hub closes)."""
        mailbox = Mailbox(self._queue_size)
        if self.closed:
            mailbox.close()
        self._watchers.setdefault(shipment_id, set()).add(mailbox)
        self._watched_keys.add(str(shipment_id).encode())
        self._count += 1
        metrics.SSE_WATCHERS.inc()
        try:
            yield mailbox
        finally:
            mailboxes = self._watchers.get(shipment_id)
            if mailboxes is not None:
                mailboxes.discard(mailbox)
                if not mailboxes:
                    del self._watchers[shipment_id]
                    self._watched_keys.discard(str(shipment_id).encode())
            self._count -= 1
            metrics.SSE_WATCHERS.dec()

    def publish(self, event: LiveEvent) -> int:
        """Hand an event to every watcher of its shipment; returns how many got it."""
        mailboxes = self._watchers.get(event.shipment_id)
        if not mailboxes:
            return 0
        for mailbox in mailboxes:
            mailbox.put(event)
        return len(mailboxes)

    def close(self) -> None:
        """End every open stream (the process is stopping: clients reconnect elsewhere or later)."""
        self.closed = True
        for mailboxes in self._watchers.values():
            for mailbox in mailboxes:
                mailbox.close()

    def dispatch(self, logical_topic: str, value: bytes, key: bytes | None = None) -> None:
        """Decode one Kafka message and publish it; what cannot be decoded is skipped (live view only).

        Most points belong to shipments nobody watches on this replica: the key (the
        shipment id) says so before the costly decoding.
        """
        if not self.is_watched(key):
            return
        adapter = TOPIC_EVENTS.get(logical_topic)
        if adapter is None:
            log.warning("live update from a topic without a contract; skipped", topic=logical_topic)
            return
        try:
            # Straight from the bytes (pydantic's own JSON parser), half the cost of decode_event's json.loads and
            # checks: the live view only shows, and what cannot be shown is skipped. Consumers that change state
            # still go through decode_event, which refuses a message without its envelope.
            event: Envelope = adapter.validate_json(value)
        except ValueError as exc:
            log.warning("live update not decodable; skipped", topic=logical_topic, error=str(exc)[:300])
            return
        if isinstance(event, ShipmentLocationUpdated | ShipmentStatusChanged):
            self.publish(event)
        elif not isinstance(event, ShipmentCreated):
            log.debug("live update of no interest", event_type=event.event_type)


async def close_streams_on_exit_signal(hub: LiveHub) -> None:
    """Worker: on SIGTERM/SIGINT end the open streams at once, then let the server's own handler run.

    Uvicorn waits for open responses before it shuts down; a live stream never
    finishes by itself, so without this every stop would wait out the graceful timeout.
    """
    loop = asyncio.get_running_loop()
    installed: dict[signal.Signals, Any] = {}

    def chained(previous: Any) -> Callable[[int, FrameType | None], None]:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(hub.close)
            if callable(previous):
                previous(signum, frame)
            else:  # nobody else listened: restore the default behaviour and deliver the signal again
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
                signal.raise_signal(signum)

        return on_signal

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            handler = chained(previous)
            signal.signal(sig, handler)
            installed[sig] = (handler, previous)
    except ValueError:  # not the main thread (an in-process test client): nothing to chain onto
        log.debug("exit signals not chained: not in the main thread")
    try:
        await asyncio.Event().wait()
    finally:
        for sig, (handler, previous) in installed.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)


class AssignmentListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Records how many partitions the live consumer reads (0 until the group has assigned them)."""

    def __init__(self) -> None:
        self.assigned = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        metrics.LIVE_PARTITIONS_ASSIGNED.set(0)
        self.assigned.clear()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        metrics.LIVE_PARTITIONS_ASSIGNED.set(len(assigned))
        if assigned:
            self.assigned.set()


class LiveFeed:
    """This process's one subscription to the live topics, read in batches and handed to the hub.

    A plain consumer rather than a framework subscriber: at thousands of points per
    second the per-message overhead is what limits a process, and nothing here needs
    retries, acks or a dead-letter topic. Its group is disposable (nothing is
    committed) and starts at the newest message: watchers get a snapshot from Postgres first.
    """

    def __init__(
        self,
        hub: LiveHub,
        topic_names: TopicNames,
        logical_topics: tuple[str, ...],
        *,
        bootstrap_servers: str,
        group_id: str,
        fetch_max_wait_ms: int,
        listener: AssignmentListener,
        max_records: int = 1000,
        security: Mapping[str, Any] | None = None,
        quiet_fetch: tuple[int, float] | None = None,
    ) -> None:
        """``security``: the runtime's TLS and SASL client arguments (``runtime.kafka_security``); ``quiet_fetch``:
        (the fetch wait in ms, after how many seconds without a point or a status) while the map is quiet
        (``FetchPacer``): the first point after a quiet spell comes up to that late, the next ones at once."""
        self._security = dict(security or {})
        self._hub = hub
        self._names = topic_names
        self._topics = [topic_names.physical(t) for t in logical_topics]
        self._bootstrap = bootstrap_servers
        self._group_id = group_id
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._listener = listener
        self._max_records = max_records
        self._pacer = FetchPacer.of(fetch_max_wait_ms, quiet_fetch)

    async def run(self) -> None:
        """Worker: read and dispatch until cancelled."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            client_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
            **self._security,
        )
        consumer.subscribe(topics=self._topics, listener=self._listener)
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=self._max_records)
                if self._pacer is not None:
                    self._pacer.apply(consumer, bool(batches))
                for partition, records in batches.items():
                    logical = self._names.logical(partition.topic)
                    for record in records:
                        self._hub.dispatch(logical, record.value or b"", record.key)
                    await asyncio.sleep(0)  # let the streams write between partitions
        finally:
            metrics.LIVE_PARTITIONS_ASSIGNED.set(0)
            await consumer.stop()


# --- server-sent events ----------------------------------------------------------------


def sse_message(event: str, data: Any, *, retry_ms: int | None = None) -> str:
    """One server-sent event: optional ``retry:``, ``event:`` and a one-line JSON ``data:``."""
    lines = []
    if retry_ms is not None:
        lines.append(f"retry: {retry_ms}")
    lines.append(f"event: {event}")
    # json.dumps never emits a raw newline, so one data line carries the whole payload.
    lines.append(f"data: {json.dumps(data, separators=(',', ':'))}")
    return "\n".join(lines) + "\n\n"


SSE_HEARTBEAT = ": keep-alive\n\n"


def point_of(event: ShipmentLocationUpdated) -> Point:
    return Point(event.lat, event.lon, event.recorded_at, event.speed, event.heading, event.accuracy)


async def shipment_stream(
    hub: LiveHub,
    shipment_id: uuid.UUID,
    *,
    load: Callable[[], Awaitable[Shipment]],
    render: Callable[[Shipment], dict[str, Any]],
    heartbeat_s: float,
    retry_ms: int,
) -> AsyncGenerator[str, None]:
    """``snapshot`` first, then ``location`` / ``status`` updates, ``end`` once closed.

    Each update is the whole shipment plus ``points``: the new fixes since the
    previous update, oldest first (the route to draw). Updates that queued up while
    the watcher was writing are sent as one, so a courier's batch of 50 fixes costs
    one render and one write per watcher, not 50.

    The watcher joins the hub before the snapshot is read, so nothing falls between
    the two; updates the snapshot already shows are recognised and skipped.
    """
    with hub.watch(shipment_id) as mailbox:
        shipment = await load()
        yield sse_message("snapshot", render(shipment), retry_ms=retry_ms)
        while shipment.status not in domain.TERMINAL:
            try:
                await asyncio.wait_for(mailbox.wait(), heartbeat_s)
            except TimeoutError:
                yield SSE_HEARTBEAT
                continue
            pending = mailbox.take()
            if pending.closed:
                return  # shutting down: the client's EventSource reconnects after `retry`
            # Points older than what the watcher already shows are left out.
            shipment, taken = domain.with_live_locations(shipment, [point_of(e) for e in pending.locations])
            points = [_route_point(p) for p in taken]
            if pending.status_changed:
                # Status changes are rare: read the truth (status, speed, delivery time) again.
                shipment = await load()
                yield sse_message("status", {**render(shipment), "points": points})
            elif points:
                yield sse_message("location", {**render(shipment), "points": points})
        yield sse_message("end", {"status": shipment.status})


def _route_point(point: Point) -> dict[str, Any]:
    return {"lat": point.lat, "lon": point.lon, "recorded_at": point.recorded_at.isoformat().replace("+00:00", "Z")}
