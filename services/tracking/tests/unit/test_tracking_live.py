"""The live hub and the server-sent event stream, with a fake shipment loader (no broker, no database)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tracking import domain, live
from tracking.domain import Destination, Point, Shipment
from tweetshop_contracts import ShipmentLocationUpdated, ShipmentStatusChanged

NOW = datetime.now(UTC)
SHIPMENT = Shipment(
    id=uuid.uuid4(),
    order_id=uuid.uuid4(),
    status="in_transit",
    destination=Destination(city="Paris", country="FR", lat=48.85, lon=2.35),
    correlation_id="corr",
    last_location=Point(lat=48.90, lon=2.35, recorded_at=NOW - timedelta(seconds=30)),
)


def location(seconds_ago: float, lat: float = 48.89, shipment_id: uuid.UUID = SHIPMENT.id) -> ShipmentLocationUpdated:
    return ShipmentLocationUpdated(
        producer="tracking",
        correlation_id="corr",
        shipment_id=shipment_id,
        order_id=SHIPMENT.order_id,
        lat=lat,
        lon=2.35,
        recorded_at=NOW - timedelta(seconds=seconds_ago),
    )


def status_changed(to: domain.ShipmentStatus) -> ShipmentStatusChanged:
    return ShipmentStatusChanged(
        producer="tracking",
        correlation_id="corr",
        shipment_id=SHIPMENT.id,
        order_id=SHIPMENT.order_id,
        from_status="in_transit",
        to_status=to,
    )


def render(s: Shipment) -> dict[str, Any]:
    last = s.last_location
    return {"status": s.status, "lat": last.lat if last else None}


def parse(chunk: str) -> tuple[str, dict[str, Any]]:
    fields = dict(line.split(": ", 1) for line in chunk.strip().splitlines() if not line.startswith(":"))
    return fields["event"], json.loads(fields["data"])


class FakeStore:
    """Stands in for the database read the stream does for its snapshot and after a status change."""

    def __init__(self, shipment: Shipment) -> None:
        self.shipment = shipment
        self.loads = 0

    async def load(self) -> Shipment:
        self.loads += 1
        return self.shipment


async def next_chunk(stream: AsyncIterator[str]) -> str:
    return await asyncio.wait_for(anext(stream), 2)


def test_an_sse_message_has_retry_event_and_one_json_data_line() -> None:
    text = live.sse_message("snapshot", {"a": "x\ny"}, retry_ms=3000)
    assert text == 'retry: 3000\nevent: snapshot\ndata: {"a":"x\\ny"}\n\n'


async def test_an_update_reaches_every_watcher_of_its_shipment_and_no_other() -> None:
    hub = live.LiveHub()
    with hub.watch(SHIPMENT.id) as first, hub.watch(SHIPMENT.id) as second, hub.watch(uuid.uuid4()) as other:
        assert hub.publish(location(5)) == 2
        assert len(first) == len(second) == 1
        assert len(other) == 0
    assert hub.watcher_count() == 0


@pytest.mark.parametrize(
    ("arrivals", "kept"),
    [((50, 40, 30, 20, 10), (30, 20, 10)), ((5, 50, 40, 30, 20), (30, 20, 5))],
    # Out of order: two batches of one courier that committed the wrong way round, the newest fix first.
    ids=["in recorded order", "newest fix first"],
)
async def test_a_slow_watcher_loses_its_stalest_fixes_never_the_newest_position(
    arrivals: tuple[int, ...], kept: tuple[int, ...]
) -> None:
    hub = live.LiveHub(queue_size=3)
    with hub.watch(SHIPMENT.id) as mailbox:
        for seconds_ago in arrivals:
            hub.publish(location(seconds_ago))
        taken = mailbox.take().locations
    assert [e.recorded_at for e in taken] == [NOW - timedelta(seconds=s) for s in kept]


async def test_a_status_change_survives_any_flood_of_fixes_and_closing_survives_everything() -> None:
    hub = live.LiveHub(queue_size=2)
    with hub.watch(SHIPMENT.id) as mailbox:
        hub.publish(status_changed("delivered"))
        for seconds_ago in range(30, 0, -1):
            hub.publish(location(seconds_ago))
        pending = mailbox.take()
        assert pending.status_changed and not pending.closed
        assert [e.recorded_at for e in pending.locations] == [NOW - timedelta(seconds=s) for s in (2, 1)]
        assert len(mailbox) == 0
        hub.publish(location(1))
        hub.close()
        assert mailbox.take().closed
        assert mailbox.take().closed  # stays closed: every later wait returns at once
        await asyncio.wait_for(mailbox.wait(), 1)


async def test_messages_that_cannot_be_decoded_are_skipped() -> None:
    hub = live.LiveHub()
    with hub.watch(SHIPMENT.id) as mailbox:
        hub.dispatch("tracking.locations.v1", b"{not json")
        hub.dispatch("tracking.locations.v1", location(5).to_bytes())
        assert len(mailbox) == 1


async def test_the_stream_sends_a_snapshot_then_newer_locations_and_skips_stale_ones() -> None:
    hub, store = live.LiveHub(), FakeStore(SHIPMENT)
    stream = live.shipment_stream(hub, SHIPMENT.id, load=store.load, render=render, heartbeat_s=5, retry_ms=1000)
    first = await next_chunk(stream)
    assert first.startswith("retry: 1000\n")
    assert parse(first) == ("snapshot", {"status": "in_transit", "lat": 48.90})
    hub.publish(location(60, lat=48.99))  # older than the snapshot's point
    hub.publish(location(5, lat=48.88))
    name, data = parse(await next_chunk(stream))
    assert (name, data["status"], data["lat"]) == ("location", "in_transit", 48.88)
    assert [p["lat"] for p in data["points"]] == [48.88]
    await stream.aclose()
    assert hub.watcher_count() == 0


async def test_updates_that_queued_up_reach_the_watcher_as_one_with_every_new_point_in_order() -> None:
    hub, store = live.LiveHub(), FakeStore(SHIPMENT)
    stream = live.shipment_stream(hub, SHIPMENT.id, load=store.load, render=render, heartbeat_s=5, retry_ms=1000)
    await next_chunk(stream)
    for seconds_ago, lat in ((20, 48.89), (15, 48.88), (10, 48.87)):
        hub.publish(location(seconds_ago, lat=lat))
    name, data = parse(await next_chunk(stream))
    assert (name, data["lat"]) == ("location", 48.87)
    assert [p["lat"] for p in data["points"]] == [48.89, 48.88, 48.87]
    assert data["points"][-1]["recorded_at"].endswith("Z")
    await stream.aclose()


async def test_the_stream_rereads_the_shipment_on_a_status_change_and_ends_once_delivered() -> None:
    hub, store = live.LiveHub(), FakeStore(SHIPMENT)
    stream = live.shipment_stream(hub, SHIPMENT.id, load=store.load, render=render, heartbeat_s=5, retry_ms=1000)
    await next_chunk(stream)
    store.shipment = replace(SHIPMENT, status="delivered")
    hub.publish(status_changed("delivered"))
    assert parse(await next_chunk(stream)) == ("status", {"status": "delivered", "lat": 48.90, "points": []})
    assert parse(await next_chunk(stream)) == ("end", {"status": "delivered"})
    assert store.loads == 2


async def test_a_quiet_stream_sends_heartbeat_comments() -> None:
    hub = live.LiveHub()
    stream = live.shipment_stream(
        hub, SHIPMENT.id, load=FakeStore(SHIPMENT).load, render=render, heartbeat_s=0.05, retry_ms=1000
    )
    await next_chunk(stream)
    assert await next_chunk(stream) == live.SSE_HEARTBEAT
    await stream.aclose()


async def test_closing_the_hub_ends_open_streams_and_new_ones_right_after_their_snapshot() -> None:
    hub = live.LiveHub()
    stream = live.shipment_stream(
        hub, SHIPMENT.id, load=FakeStore(SHIPMENT).load, render=render, heartbeat_s=5, retry_ms=1000
    )
    await next_chunk(stream)
    hub.close()
    assert [chunk async for chunk in stream] == []
    late = live.shipment_stream(
        hub, SHIPMENT.id, load=FakeStore(SHIPMENT).load, render=render, heartbeat_s=5, retry_ms=1000
    )
    assert parse(await next_chunk(late))[0] == "snapshot"
    assert [chunk async for chunk in late] == []


async def test_updates_of_shipments_nobody_watches_here_are_skipped_before_decoding() -> None:
    hub = live.LiveHub()
    with hub.watch(SHIPMENT.id) as mailbox:
        other = uuid.uuid4()
        assert not hub.is_watched(str(other).encode())
        # Not even decoded: garbage under another shipment's key is simply passed over.
        hub.dispatch("tracking.locations.v1", b"{not json", str(other).encode())
        hub.dispatch("tracking.locations.v1", location(5).to_bytes(), str(SHIPMENT.id).encode())
        assert len(mailbox) == 1
    assert hub.watcher_count() == 0
    assert not hub.is_watched(str(SHIPMENT.id).encode())  # forgotten once its last watcher left


def test_a_watched_id_is_recognised_in_any_spelling_of_its_key() -> None:
    hub = live.LiveHub()
    with hub.watch(SHIPMENT.id):
        assert hub.is_watched(str(SHIPMENT.id).encode())
        assert hub.is_watched(str(SHIPMENT.id).upper().encode())
        assert hub.is_watched(SHIPMENT.id.hex.encode())
        assert not hub.is_watched(str(uuid.uuid4()).upper().encode())
        assert hub.is_watched(b"not-a-uuid")  # unknown keys count as watched: decoded, then judged
