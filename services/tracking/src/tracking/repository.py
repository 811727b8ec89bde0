"""The only SQL of tracking: `$n` parameters, explicit columns, rows turned into domain objects at once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from .domain import Destination, Point, Shipment

_SHIPMENT_COLUMNS = (
    "id, order_id, status, dest_city, dest_country, dest_lat, dest_lon, correlation_id, "
    "last_lat, last_lon, last_recorded_at, last_speed, last_heading, last_accuracy, recent_speed_mps, "
    "created_at, updated_at, delivered_at"
)


def _shipment(row: asyncpg.Record) -> Shipment:
    last = None
    if row["last_recorded_at"] is not None:
        last = Point(
            lat=row["last_lat"],
            lon=row["last_lon"],
            recorded_at=row["last_recorded_at"],
            speed=row["last_speed"],
            heading=row["last_heading"],
            accuracy=row["last_accuracy"],
        )
    return Shipment(
        id=row["id"],
        order_id=row["order_id"],
        status=row["status"],
        destination=Destination(
            city=row["dest_city"], country=row["dest_country"], lat=row["dest_lat"], lon=row["dest_lon"]
        ),
        correlation_id=row["correlation_id"],
        last_location=last,
        recent_speed_mps=row["recent_speed_mps"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        delivered_at=row["delivered_at"],
    )


async def insert_shipment(
    conn: asyncpg.Connection, s: Shipment, courier_token_hash: str, buyer_access_hash: str | None = None
) -> Shipment | None:
    """The new shipment, or None when the order already has one."""
    row = await conn.fetchrow(
        f"""INSERT INTO shipments (id, order_id, status, dest_city, dest_country, dest_lat, dest_lon,
                                   correlation_id, courier_token_hash, buyer_access_hash)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (order_id) DO NOTHING
            RETURNING {_SHIPMENT_COLUMNS}""",
        s.id,
        s.order_id,
        s.status,
        s.destination.city,
        s.destination.country,
        s.destination.lat,
        s.destination.lon,
        s.correlation_id,
        courier_token_hash,
        buyer_access_hash,
    )
    return _shipment(row) if row else None


async def insert_shipments(
    conn: asyncpg.Connection, shipments: Sequence[tuple[Shipment, str, str | None]]
) -> dict[uuid.UUID, Shipment]:
    """``insert_shipment`` for several (shipment, courier token hash, buyer access hash), in one statement: as in
    turn, an order gets the first one given for it, and none when it has one already. Returns the new shipments
    by order id."""
    first: dict[uuid.UUID, tuple[Shipment, str, str | None]] = {}
    for item in shipments:
        first.setdefault(item[0].order_id, item)
    items = list(first.values())
    rows = await conn.fetch(
        f"""INSERT INTO shipments (id, order_id, status, dest_city, dest_country, dest_lat, dest_lon,
                                   correlation_id, courier_token_hash, buyer_access_hash)
            SELECT id, order_id, status, dest_city, dest_country, dest_lat, dest_lon, correlation_id,
                   courier_token_hash, buyer_access_hash
            FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::float8[],
                        $8::text[], $9::text[], $10::text[])
                 WITH ORDINALITY AS s(id, order_id, status, dest_city, dest_country, dest_lat, dest_lon,
                                      correlation_id, courier_token_hash, buyer_access_hash, n)
            ORDER BY n
            ON CONFLICT (order_id) DO NOTHING
            RETURNING {_SHIPMENT_COLUMNS}""",
        [s.id for s, _, _ in items],
        [s.order_id for s, _, _ in items],
        [s.status for s, _, _ in items],
        [s.destination.city for s, _, _ in items],
        [s.destination.country for s, _, _ in items],
        [s.destination.lat for s, _, _ in items],
        [s.destination.lon for s, _, _ in items],
        [s.correlation_id for s, _, _ in items],
        [token for _, token, _ in items],
        [access for _, _, access in items],
    )
    return {shipment.order_id: shipment for shipment in map(_shipment, rows)}


async def erase_buyer_places(conn: asyncpg.Connection, order_id: uuid.UUID, courier_token_hash: str) -> bool:
    """The order's buyer deleted the account: the destination kept to one decimal of a degree (about 10 km: the
    city, not the door), the courier's track and last position deleted, the buyer's access hash dropped and the
    courier token replaced (``courier_token_hash``, a secret nobody holds). False when the order has no shipment."""
    shipment_id = await conn.fetchval(
        """UPDATE shipments SET dest_lat = round(dest_lat::numeric, 1)::double precision,
               dest_lon = round(dest_lon::numeric, 1)::double precision,
               last_lat = NULL, last_lon = NULL, last_recorded_at = NULL, last_speed = NULL, last_heading = NULL,
               last_accuracy = NULL, recent_speed_mps = NULL, buyer_access_hash = NULL,
               courier_token_hash = $2, updated_at = now()
           WHERE order_id = $1 RETURNING id""",
        order_id,
        courier_token_hash,
    )
    if shipment_id is None:
        return False
    await conn.execute("DELETE FROM shipment_locations WHERE shipment_id = $1", shipment_id)
    return True


async def get_buyer_access_hash(conn: asyncpg.Connection, order_id: uuid.UUID) -> str | None:
    """The hash of the token that reads this order's shipment; None: no shipment yet, or none a buyer may read."""
    found: str | None = await conn.fetchval("SELECT buyer_access_hash FROM shipments WHERE order_id = $1", order_id)
    return found


async def get_shipment(
    conn: asyncpg.Connection, shipment_id: uuid.UUID, *, for_update: bool = False
) -> Shipment | None:
    """One shipment; ``for_update`` queues concurrent writers of the same shipment behind this transaction."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_SHIPMENT_COLUMNS} FROM shipments WHERE id = $1{lock}", shipment_id)
    return _shipment(row) if row else None


async def get_shipment_by_order(
    conn: asyncpg.Connection, order_id: uuid.UUID, *, for_update: bool = False
) -> Shipment | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_SHIPMENT_COLUMNS} FROM shipments WHERE order_id = $1{lock}", order_id)
    return _shipment(row) if row else None


async def list_shipments_by_order(conn: asyncpg.Connection, order_id: uuid.UUID) -> list[Shipment]:
    rows = await conn.fetch(
        f"SELECT {_SHIPMENT_COLUMNS} FROM shipments WHERE order_id = $1 ORDER BY created_at", order_id
    )
    return [_shipment(r) for r in rows]


async def get_shipment_for_courier(conn: asyncpg.Connection, shipment_id: uuid.UUID) -> tuple[Shipment, str] | None:
    """The shipment, locked for this transaction, with its courier token hash (one round trip for both)."""
    row = await conn.fetchrow(
        f"SELECT {_SHIPMENT_COLUMNS}, courier_token_hash FROM shipments WHERE id = $1 FOR UPDATE", shipment_id
    )
    return (_shipment(row), str(row["courier_token_hash"])) if row else None


async def get_courier_token_hash(conn: asyncpg.Connection, shipment_id: uuid.UUID) -> str | None:
    """The stored hash of the shipment's courier token; None when the shipment does not exist."""
    value = await conn.fetchval("SELECT courier_token_hash FROM shipments WHERE id = $1", shipment_id)
    return str(value) if value is not None else None


async def set_courier_token_hash(conn: asyncpg.Connection, shipment_id: uuid.UUID, token_hash: str) -> bool:
    """False when the shipment does not exist."""
    updated = await conn.fetchval(
        "UPDATE shipments SET courier_token_hash = $2, updated_at = now() WHERE id = $1 RETURNING true",
        shipment_id,
        token_hash,
    )
    return bool(updated)


async def update_progress(conn: asyncpg.Connection, s: Shipment) -> Shipment:
    """Store status, newest location, recent speed and delivery time; returns the stored shipment."""
    last = s.last_location
    row = await conn.fetchrow(
        f"""UPDATE shipments SET status = $2, last_lat = $3, last_lon = $4, last_recorded_at = $5, last_speed = $6,
                last_heading = $7, last_accuracy = $8, recent_speed_mps = $9, delivered_at = $10, updated_at = now()
            WHERE id = $1
            RETURNING {_SHIPMENT_COLUMNS}""",
        s.id,
        s.status,
        last.lat if last else None,
        last.lon if last else None,
        last.recorded_at if last else None,
        last.speed if last else None,
        last.heading if last else None,
        last.accuracy if last else None,
        s.recent_speed_mps,
        s.delivered_at,
    )
    assert row is not None
    return _shipment(row)


async def set_status(conn: asyncpg.Connection, shipment_id: uuid.UUID, status: str) -> None:
    await conn.execute("UPDATE shipments SET status = $2, updated_at = now() WHERE id = $1", shipment_id, status)


async def insert_locations(conn: asyncpg.Connection, shipment_id: uuid.UUID, points: Sequence[Point]) -> set[datetime]:
    """Store a batch in one statement; returns the recorded_at of the points that were new.

    One INSERT over unnest'ed arrays (a single round trip, like COPY) that, unlike
    COPY, can skip the points of a retried batch and say which ones it stored.
    """
    rows = await conn.fetch(
        """INSERT INTO shipment_locations (shipment_id, recorded_at, lat, lon, speed, heading, accuracy)
           SELECT $1, t.recorded_at, t.lat, t.lon, t.speed, t.heading, t.accuracy
           FROM unnest($2::timestamptz[], $3::float8[], $4::float8[], $5::float8[], $6::float8[], $7::float8[])
                AS t (recorded_at, lat, lon, speed, heading, accuracy)
           ON CONFLICT (shipment_id, recorded_at) DO NOTHING
           RETURNING recorded_at""",
        shipment_id,
        [p.recorded_at for p in points],
        [p.lat for p in points],
        [p.lon for p in points],
        [p.speed for p in points],
        [p.heading for p in points],
        [p.accuracy for p in points],
    )
    return {r["recorded_at"] for r in rows}


async def recent_points(
    conn: asyncpg.Connection, shipment_id: uuid.UUID, since: datetime, *, limit: int = 50
) -> list[Point]:
    """The newest points recorded at or after ``since`` (at most ``limit``), oldest first."""
    rows = await conn.fetch(
        """SELECT lat, lon, recorded_at, speed, heading, accuracy FROM (
               SELECT lat, lon, recorded_at, speed, heading, accuracy FROM shipment_locations
               WHERE shipment_id = $1 AND recorded_at >= $2 ORDER BY recorded_at DESC LIMIT $3
           ) newest ORDER BY recorded_at""",
        shipment_id,
        since,
        limit,
    )
    # Positional, in the SELECT's column order: Point(**dict(r.items())) was 10 % of tracking's CPU under load.
    return [Point(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


async def list_shipments_by_status(
    conn: asyncpg.Connection,
    status: str,
    *,
    limit: int,
    created_after: datetime | None = None,
    after_id: uuid.UUID | None = None,
) -> list[Shipment]:
    """Shipments in one status, oldest first (then by id).

    The next page starts after the previous page's last shipment: ``created_after`` its ``created_at`` and
    ``after_id`` its ``id``. Shipments created by one transaction share a ``created_at`` (a consumer
    batch creates up to a hundred), so ``created_after`` alone skips those of them past the page's end.
    """
    if created_after is not None and after_id is not None:
        rows = await conn.fetch(
            f"""SELECT {_SHIPMENT_COLUMNS} FROM shipments
                WHERE status = $1 AND (created_at, id) > ($2, $3)
                ORDER BY created_at, id LIMIT $4""",
            status,
            created_after,
            after_id,
            limit,
        )
    else:
        rows = await conn.fetch(
            f"""SELECT {_SHIPMENT_COLUMNS} FROM shipments
                WHERE status = $1 AND created_at > coalesce($2, '-infinity'::timestamptz)
                ORDER BY created_at, id LIMIT $3""",
            status,
            created_after,
            limit,
        )
    return [_shipment(r) for r in rows]


async def route(conn: asyncpg.Connection, shipment_id: uuid.UUID, *, limit: int) -> list[Point]:
    """The newest ``limit`` stored points of a shipment, oldest first (what the map draws as the route)."""
    rows = await conn.fetch(
        """SELECT lat, lon, recorded_at, speed, heading, accuracy FROM (
               SELECT lat, lon, recorded_at, speed, heading, accuracy FROM shipment_locations
               WHERE shipment_id = $1 ORDER BY recorded_at DESC LIMIT $2
           ) newest ORDER BY recorded_at""",
        shipment_id,
        limit,
    )
    return [Point(**dict(r.items())) for r in rows]


@dataclass(frozen=True)
class ThinningCandidate:
    shipment_id: uuid.UUID
    thinned_until: datetime | None
    last_recorded_at: datetime | None


async def shipments_to_thin(conn: asyncpg.Connection, until: datetime, *, limit: int) -> list[ThinningCandidate]:
    """Shipments with history before ``until`` not thinned yet, least recently thinned first."""
    rows = await conn.fetch(
        """SELECT id, history_thinned_until, last_recorded_at FROM shipments
           WHERE last_recorded_at IS NOT NULL
             AND coalesce(history_thinned_until, '-infinity'::timestamptz) < $1
             AND coalesce(history_thinned_until, '-infinity'::timestamptz) <= last_recorded_at
           ORDER BY history_thinned_until NULLS FIRST, id
           LIMIT $2""",
        until,
        limit,
    )
    return [ThinningCandidate(r["id"], r["history_thinned_until"], r["last_recorded_at"]) for r in rows]


async def location_times(
    conn: asyncpg.Connection, shipment_id: uuid.UUID, since: datetime | None, until: datetime
) -> list[datetime]:
    """recorded_at of the shipment's points in [since, until), oldest first."""
    rows = await conn.fetch(
        """SELECT recorded_at FROM shipment_locations
           WHERE shipment_id = $1 AND recorded_at >= coalesce($2, '-infinity'::timestamptz) AND recorded_at < $3
           ORDER BY recorded_at""",
        shipment_id,
        since,
        until,
    )
    return [r["recorded_at"] for r in rows]


async def delete_locations(conn: asyncpg.Connection, shipment_id: uuid.UUID, recorded: Sequence[datetime]) -> int:
    """Delete the named points of one shipment; returns how many went."""
    if not recorded:
        return 0
    status = await conn.execute(
        "DELETE FROM shipment_locations WHERE shipment_id = $1 AND recorded_at = ANY($2::timestamptz[])",
        shipment_id,
        list(recorded),
    )
    return int(status.split()[-1])


async def set_thinned_until(conn: asyncpg.Connection, shipment_id: uuid.UUID, until: datetime) -> None:
    await conn.execute("UPDATE shipments SET history_thinned_until = $2 WHERE id = $1", shipment_id, until)


async def count_by_status(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM shipments GROUP BY status")
    return {r["status"]: int(r["n"]) for r in rows}
