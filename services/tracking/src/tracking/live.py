"""Live updates: one Kafka subscription per process feeds an in-memory hub; each watcher gets a bounded queue.

Every tracking replica reads tracking.locations.v1 and tracking.shipments.v1 in
its own consumer group (DESIGN.md, "Scaling out"), so whichever replica a
browser's stream lands on sees every update. A watcher that reads too slowly
loses its oldest updates, never the process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from types import FrameType
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from tweetshop_contracts import Envelope, ShipmentCreated, ShipmentLocationUpdated, ShipmentStatusChanged, decode_event
from tweetshop_platform.kafka import TopicNames

from . import domain, metrics
from .domain import Point, Shipment

log = structlog.get_logger(__name__)

LiveEvent = ShipmentLocationUpdated | ShipmentStatusChanged
# What a watcher's queue carries: an update, or None when the process is shutting down.
Delivery = LiveEvent | None
# A key as str(uuid.UUID) writes it; other spellings of an id are parsed.
_CANONICAL_KEY = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class LiveHub:
    """Fans one stream of events out to the watchers of each shipment."""

    def __init__(self, queue_size: int = 64) -> None:
        self._queue_size = queue_size
        self._watchers: dict[uuid.UUID, set[asyncio.Queue[Delivery]]] = {}
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
    def watch(self, shipment_id: uuid.UUID) -> Iterator[asyncio.Queue[Delivery]]:
        """A queue that receives the shipment's updates until the block ends (None: the hub closed)."""
        queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=self._queue_size)
        if self.closed:
            queue.put_nowait(None)
        self._watchers.setdefault(shipment_id, set()).add(queue)
        self._watched_keys.add(str(shipment_id).encode())
        self._count += 1
        metrics.SSE_WATCHERS.inc()
        try:
            yield queue
        finally:
            queues = self._watchers.get(shipment_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._watchers[shipment_id]
                    self._watched_keys.discard(str(shipment_id).encode())
            self._count -= 1
            metrics.SSE_WATCHERS.dec()

    def publish(self, event: LiveEvent) -> int:
        """Hand an event to every watcher of its shipment; returns how many got it."""
        queues = self._watchers.get(event.shipment_id)
        if not queues:
            return 0
        for queue in queues:
            _put_dropping_oldest(queue, event)
        return len(queues)

    def close(self) -> None:
        """End every open stream (the process is stopping: clients reconnect elsewhere or later)."""
        self.closed = True
        for queues in self._watchers.values():
            for queue in queues:
                _put_dropping_oldest(queue, None)

    def dispatch(self, logical_topic: str, value: bytes, key: bytes | None = None) -> None:
        """Decode one Kafka message and publish it; what cannot be decoded is skipped (live view only).

        Most points belong to shipments nobody watches on this replica: the key (the
        shipment id) says so before the costly decoding.
        """
        if not self.is_watched(key):
            return
        try:
            event: Envelope = decode_event(logical_topic, value)
        except ValueError as exc:
            log.warning("live update not decodable; skipped", topic=logical_topic, error=str(exc)[:300])
            return
        if isinstance(event, ShipmentLocationUpdated | ShipmentStatusChanged):
            self.publish(event)
        elif not isinstance(event, ShipmentCreated):
            log.debug("live update of no interest", event_type=event.event_type)


def _put_dropping_oldest(queue: asyncio.Queue[Delivery], item: Delivery) -> None:
    if queue.full():
        # The newest position matters more than an old one the watcher has not read yet.
        queue.get_nowait()
        metrics.LIVE_UPDATES_DROPPED.inc()
    queue.put_nowait(item)


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
    ) -> None:
        self._hub = hub
        self._names = topic_names
        self._topics = [topic_names.physical(t) for t in logical_topics]
        self._bootstrap = bootstrap_servers
        self._group_id = group_id
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._listener = listener
        self._max_records = max_records

    async def run(self) -> None:
        """Worker: read and dispatch until cancelled."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            client_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )
        consumer.subscribe(topics=self._topics, listener=self._listener)
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=self._max_records)
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
    with hub.watch(shipment_id) as queue:
        shipment = await load()
        yield sse_message("snapshot", render(shipment), retry_ms=retry_ms)
        while shipment.status not in domain.TERMINAL:
            try:
                first = await asyncio.wait_for(queue.get(), heartbeat_s)
            except TimeoutError:
                yield SSE_HEARTBEAT
                continue
            pending = [first, *_drain(queue)]
            if None in pending:
                return  # shutting down: the client's EventSource reconnects after `retry`
            status_changed = any(not isinstance(e, ShipmentLocationUpdated) for e in pending)
            # Points older than what the watcher already shows are left out.
            shipment, taken = domain.with_live_locations(
                shipment, [point_of(e) for e in pending if isinstance(e, ShipmentLocationUpdated)]
            )
            points = [_route_point(p) for p in taken]
            if status_changed:
                # Status changes are rare: read the truth (status, speed, delivery time) again.
                shipment = await load()
                yield sse_message("status", {**render(shipment), "points": points})
            elif points:
                yield sse_message("location", {**render(shipment), "points": points})
        yield sse_message("end", {"status": shipment.status})


def _drain(queue: asyncio.Queue[Delivery]) -> list[Delivery]:
    """Everything already waiting in the queue (without waiting for more)."""
    items: list[Delivery] = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def _route_point(point: Point) -> dict[str, Any]:
    return {"lat": point.lat, "lon": point.lon, "recorded_at": point.recorded_at.isoformat().replace("+00:00", "Z")}
