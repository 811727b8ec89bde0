"""Retention against real Postgres: a pass thins old history to one point per window and keeps the rest."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
from tracking import repository, service
from tracking.domain import Destination, Point, Shipment, ShipmentStatus, Thinning

NOW = datetime.now(UTC).replace(microsecond=0)
RULE = Thinning(keep_every_s=60, older_than_s=24 * 3600)


def new_shipment(status: ShipmentStatus = "in_transit") -> Shipment:
    return Shipment(
        id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        status=status,
        destination=Destination("Paris", "FR", 48.853, 2.3499),
        correlation_id="corr",
    )


async def a_shipment_with_history(pool: asyncpg.Pool, recorded: list[datetime]) -> Shipment:
    shipment = new_shipment()
    points = [Point(48.9 - i * 1e-4, 2.3499, t) for i, t in enumerate(recorded)]
    async with pool.acquire() as conn:
        await repository.insert_shipment(conn, shipment, "hash")
        await repository.insert_locations(conn, shipment.id, points)
        return await repository.update_progress(conn, replace(shipment, last_location=points[-1]))


async def stored(pool: asyncpg.Pool, shipment_id: uuid.UUID) -> list[datetime]:
    async with pool.acquire() as conn:
        return await repository.location_times(conn, shipment_id, None, NOW + timedelta(days=1))


async def test_a_pass_keeps_one_old_point_per_minute_all_recent_ones_and_deletes_nothing_twice(
    tracking_pool: asyncpg.Pool,
) -> None:
    # Three days ago, a fix every 5 s for 3 minutes; then a recent stretch.
    old_start = (NOW - timedelta(days=3)).replace(second=0)
    old = [old_start + timedelta(seconds=5 * i) for i in range(36)]
    recent = [NOW - timedelta(minutes=10) + timedelta(seconds=5 * i) for i in range(12)]
    busy = await a_shipment_with_history(tracking_pool, old + recent)
    # A delivered shipment whose whole history is old: its final point (the one the row repeats) stays.
    finished_start = (NOW - timedelta(days=2)).replace(second=0)
    finished_points = [finished_start + timedelta(seconds=10 * i) for i in range(6)]
    finished = await a_shipment_with_history(tracking_pool, finished_points)

    first = await service.thin_history(tracking_pool, RULE, now=NOW)

    assert first.shipments == 2
    assert first.deleted == (36 - 3) + (6 - 2)
    assert await stored(tracking_pool, busy.id) == [old_start + timedelta(minutes=m) for m in range(3)] + recent
    assert await stored(tracking_pool, finished.id) == [finished_start, finished_points[-1]]

    again = await service.thin_history(tracking_pool, RULE, now=NOW + timedelta(minutes=5))
    assert again.deleted == 0
    assert len(await stored(tracking_pool, busy.id)) == 3 + len(recent)


async def test_a_rule_that_keeps_every_point_thins_nothing(tracking_pool: asyncpg.Pool) -> None:
    recorded = [NOW - timedelta(days=3) + timedelta(seconds=i) for i in range(20)]
    shipment = await a_shipment_with_history(tracking_pool, recorded)
    done = await service.thin_history(tracking_pool, Thinning(keep_every_s=0, older_than_s=3600), now=NOW)
    assert done.deleted == 0
    assert await stored(tracking_pool, shipment.id) == recorded


async def test_paging_by_created_at_and_id_never_skips_shipments_created_together(tracking_pool: asyncpg.Pool) -> None:
    # One transaction (a consumer batch of OrderPaid events): every shipment gets the same created_at.
    async with tracking_pool.acquire() as conn, conn.transaction():
        for _ in range(5):
            await repository.insert_shipment(conn, new_shipment("label_created"), "hash")
    async with tracking_pool.acquire() as conn:
        everything = await repository.list_shipments_by_status(conn, "label_created", limit=100)
        assert len({s.created_at for s in everything}) == 1 and len(everything) == 5
        paged: list[Shipment] = []
        page = await repository.list_shipments_by_status(conn, "label_created", limit=2)
        while page:
            paged += page
            last = page[-1]
            page = await repository.list_shipments_by_status(
                conn, "label_created", limit=2, created_after=last.created_at, after_id=last.id
            )
        assert [s.id for s in paged] == [s.id for s in everything]
        # created_after alone is strictly later: past a tie it skips the rest of it (why after_id exists).
        assert (
            await repository.list_shipments_by_status(
                conn, "label_created", limit=2, created_after=everything[1].created_at
            )
            == []
        )
