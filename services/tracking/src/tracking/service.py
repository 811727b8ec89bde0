"""Tracking use cases: thin, transactional, each state change and its events committed together."""

from __future__ import annotations

import collections
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import asyncpg
from tweetshop_contracts import (
    Destination,
    OrderBuyerErased,
    OrderCancelled,
    OrderPaid,
    OrderRefunded,
    ShipmentCreated,
    ShipmentLocationUpdated,
    ShipmentStatusChanged,
)
from tweetshop_platform import outbox
from tweetshop_platform.auth import new_secret, secret_matches
from tweetshop_platform.errors import Conflict, DomainError, Forbidden, NotFound, Unprocessable

from . import domain, metrics, repository
from .domain import Point, Rules, Shipment, StatusChange

PRODUCER = "tracking"
COURIER_TOKEN_PREFIX = "tsc"


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    shipment: Shipment


def status_event(shipment: Shipment, change: StatusChange) -> ShipmentStatusChanged:
    return ShipmentStatusChanged(
        producer=PRODUCER,
        correlation_id=shipment.correlation_id,
        shipment_id=shipment.id,
        order_id=shipment.order_id,
        from_status=change.from_status,
        to_status=change.to_status,
    )


def location_event(shipment: Shipment, point: Point) -> ShipmentLocationUpdated:
    return ShipmentLocationUpdated(
        producer=PRODUCER,
        correlation_id=shipment.correlation_id,
        shipment_id=shipment.id,
        order_id=shipment.order_id,
        lat=point.lat,
        lon=point.lon,
        recorded_at=point.recorded_at,
        speed=point.speed,
        heading=point.heading,
        accuracy=point.accuracy,
    )


# --- reactions to checkout.orders.v1 ---------------------------------------------------


def _new_shipment(event: OrderPaid) -> tuple[Shipment, str, str | None]:
    """The shipment a paid order gets, with the hash of a courier token nobody sees until an operator asks, and the
    hash of the buyer's order token."""
    _, token_hash = new_secret(COURIER_TOKEN_PREFIX)
    shipment = Shipment(
        id=uuid.uuid4(),
        order_id=event.order_id,
        status="label_created",
        destination=domain.Destination(
            city=event.destination.city,
            country=event.destination.country,
            lat=event.destination.lat,
            lon=event.destination.lon,
        ),
        correlation_id=event.correlation_id,
    )
    return shipment, token_hash, event.buyer_access_sha256


def _created(shipment: Shipment) -> ShipmentCreated:
    return ShipmentCreated(
        producer=PRODUCER,
        correlation_id=shipment.correlation_id,
        shipment_id=shipment.id,
        order_id=shipment.order_id,
        status=shipment.status,
        destination=Destination(
            city=shipment.destination.city,
            country=shipment.destination.country,
            lat=shipment.destination.lat,
            lon=shipment.destination.lon,
        ),
    )


async def on_order_paid(conn: asyncpg.Connection, event: OrderPaid) -> None:
    """A paid order gets its shipment (once per order) and a courier token nobody sees until an operator asks."""
    created = await repository.insert_shipment(conn, *_new_shipment(event))
    if created is None:
        return  # the order already has its shipment
    await outbox.enqueue(conn, _created(created))


async def on_orders_paid(conn: asyncpg.Connection, events: Sequence[OrderPaid]) -> None:
    """``on_order_paid`` for several events in turn, in one statement."""
    created = await repository.insert_shipments(conn, [_new_shipment(event) for event in events])
    for event in events:
        shipment = created.pop(event.order_id, None)  # the first event of an order creates, the others find it
        if shipment is not None:
            await outbox.enqueue(conn, _created(shipment))


async def on_order_withdrawn(conn: asyncpg.Connection, event: OrderRefunded | OrderCancelled) -> None:
    """A cancelled or fully refunded order cancels its shipment while the parcel has not been picked up."""
    if isinstance(event, OrderRefunded) and not event.full:
        return  # a partial refund (a discount, a damaged item) still ships
    shipment = await repository.get_shipment_by_order(conn, event.order_id, for_update=True)
    if shipment is None:
        return
    change = domain.cancel_before_pickup(shipment.status)
    if change is None:
        return  # already on its way (or closed): a return is handled elsewhere
    await repository.set_status(conn, shipment.id, change.to_status)
    await outbox.enqueue(conn, status_event(shipment, change))


async def on_buyer_erased(conn: asyncpg.Connection, event: OrderBuyerErased) -> None:
    """The order's buyer deleted the account: erase the places tracking keeps of them for this order.

    The destination is kept only to one decimal of a degree (city and country stay, for the merchant's records,
    as checkout keeps them), the courier's track and last position are deleted, nobody can open the shipment with
    the order's access token any more (operators still can), and the courier token is replaced by one nobody
    holds: no later point of the courier's is stored (an operator may issue a new token). Status and history of
    statuses stay. Replayed or for an order without a shipment: nothing (more) to erase.
    """
    _, unknown_hash = new_secret(COURIER_TOKEN_PREFIX)
    await repository.erase_buyer_places(conn, event.order_id, unknown_hash)


# --- couriers --------------------------------------------------------------------------


async def issue_courier_token(pool: asyncpg.Pool, shipment_id: uuid.UUID) -> str:
    """A new courier token for the shipment (the previous one stops working); shown once, stored hashed."""
    token, token_hash = new_secret(COURIER_TOKEN_PREFIX)
    async with pool.acquire() as conn:
        if not await repository.set_courier_token_hash(conn, shipment_id, token_hash):
            raise NotFound("unknown shipment", code="unknown_shipment")
    return token


def _check_courier(shipment_id: uuid.UUID, token: str, token_hash: str | None) -> str:
    """404 for an unknown shipment (no hash), 403 unless ``token`` is its courier token; returns the hash."""
    if token_hash is None:
        raise NotFound("unknown shipment", code="unknown_shipment")
    if not secret_matches(token, token_hash):
        raise Forbidden("this token is not the courier token of this shipment")
    return token_hash


class CourierTokens:
    """Courier tokens recently proven valid, so a busy courier's requests pass the first check without a query.

    Only a shortcut for the check made before the body is read: ingest checks the
    token again under the shipment's row lock, so a replaced token still writes nothing.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._hashes: collections.OrderedDict[uuid.UUID, str] = collections.OrderedDict()

    async def authorize(self, pool: asyncpg.Pool, shipment_id: uuid.UUID, token: str) -> None:
        """404 for an unknown shipment, 403 unless ``token`` is its courier token (remembered when it is)."""
        known = self._hashes.get(shipment_id)
        if known is not None and secret_matches(token, known):
            self._hashes.move_to_end(shipment_id)
            return
        async with pool.acquire() as conn:
            token_hash = await repository.get_courier_token_hash(conn, shipment_id)
        self.remember(shipment_id, _check_courier(shipment_id, token, token_hash))

    def remember(self, shipment_id: uuid.UUID, token_hash: str) -> None:
        self._hashes[shipment_id] = token_hash
        self._hashes.move_to_end(shipment_id)
        while len(self._hashes) > self._size:
            self._hashes.popitem(last=False)

    def forget(self, shipment_id: uuid.UUID) -> None:
        self._hashes.pop(shipment_id, None)


async def ingest_locations(
    pool: asyncpg.Pool,
    shipment_id: uuid.UUID,
    token: str,
    points: Sequence[Point],
    rules: Rules,
    *,
    now: datetime,
    max_batch: int,
    tokens: CourierTokens | None = None,
) -> IngestResult:
    """Store a courier's batch, move the shipment forward, and publish every new point and status change.

    All of it is one transaction: a refused batch leaves nothing behind.
    """
    if len(points) > max_batch:
        metrics.LOCATION_BATCHES_REFUSED.labels("too_large").inc()
        raise DomainError(
            f"a batch holds at most {max_batch} points, got {len(points)}: send smaller batches",
            code="batch_too_large",
            status=413,
        )
    if not points:
        metrics.LOCATION_BATCHES_REFUSED.labels("empty").inc()
        raise Unprocessable("a batch holds at least one point", code="empty_batch")
    try:
        domain.validate_batch(points, now, rules)
    except domain.InvalidPoint as invalid:
        metrics.LOCATION_BATCHES_REFUSED.labels("invalid_point").inc()
        raise Unprocessable(str(invalid), code="invalid_location", index=invalid.index) from None

    async with pool.acquire() as conn, conn.transaction():
        found = await repository.get_shipment_for_courier(conn, shipment_id)
        try:
            # Checked again under the row lock: a token replaced meanwhile no longer writes.
            _check_courier(shipment_id, token, found[1] if found else None)
        except DomainError:
            if tokens is not None:
                tokens.forget(shipment_id)
            raise
        assert found is not None  # NotFound was raised otherwise
        shipment = found[0]
        if shipment.status in domain.TERMINAL:
            metrics.LOCATION_BATCHES_REFUSED.labels("closed").inc()
            raise Conflict(f"shipment is {shipment.status}: it takes no more locations", code="shipment_closed")

        stored = await repository.insert_locations(conn, shipment_id, points)
        new_points = _first_of_each(points, stored)
        outcome = domain.apply_points(shipment, new_points, rules)
        updated = outcome.shipment
        if outcome.moved:
            assert updated.last_location is not None
            since = updated.last_location.recorded_at - timedelta(seconds=rules.speed_window_s)
            recent = await repository.recent_points(conn, shipment_id, since)
            speed = domain.average_speed_mps(recent)
            updated = replace(updated, recent_speed_mps=speed if speed is not None else shipment.recent_speed_mps)
            updated = await repository.update_progress(conn, updated)
        # One event per stored point, in recorded order; keyed by shipment, so one shipment's stay ordered.
        events = [location_event(shipment, p) for p in sorted(new_points, key=lambda p: p.recorded_at)]
        await outbox.enqueue(conn, *events, *(status_event(shipment, c) for c in outcome.changes))

    metrics.LOCATIONS_INGESTED.inc(len(new_points))
    metrics.LOCATION_DUPLICATES.inc(len(points) - len(new_points))
    return IngestResult(accepted=len(new_points), duplicates=len(points) - len(new_points), shipment=updated)


def _first_of_each(points: Sequence[Point], stored: set[datetime]) -> list[Point]:
    """The points the database stored: one per new recorded_at (a batch may repeat itself)."""
    if len(stored) == len(points):
        return list(points)  # as many new times as points: every point, each time once (the usual batch)
    seen: set[datetime] = set()
    kept: list[Point] = []
    for point in points:
        if point.recorded_at in stored and point.recorded_at not in seen:
            seen.add(point.recorded_at)
            kept.append(point)
    return kept


# --- reads -----------------------------------------------------------------------------


async def authorize_buyer(pool: asyncpg.Pool, order_id: uuid.UUID, access_token: str) -> None:
    """NotFound unless ``access_token`` is the token of this order (the one whose hash came with OrderPaid)."""
    async with pool.acquire() as conn:
        expected = await repository.get_buyer_access_hash(conn, order_id)
    if expected is None or not secret_matches(access_token, expected):
        raise NotFound("no shipment of this order can be read with this token", code="unknown_shipment")


async def shipments_for_order(pool: asyncpg.Pool, order_id: uuid.UUID) -> list[Shipment]:
    async with pool.acquire() as conn:
        return await repository.list_shipments_by_order(conn, order_id)


async def get_shipment(pool: asyncpg.Pool, shipment_id: uuid.UUID) -> Shipment:
    async with pool.acquire() as conn:
        shipment = await repository.get_shipment(conn, shipment_id)
    if shipment is None:
        raise NotFound("unknown shipment", code="unknown_shipment")
    return shipment


async def shipments_in_status(
    pool: asyncpg.Pool,
    status: domain.ShipmentStatus,
    *,
    limit: int,
    created_after: datetime | None = None,
    after_id: uuid.UUID | None = None,
) -> list[Shipment]:
    """Operators: shipments in one status, oldest first (couriers pick up ``label_created`` ones)."""
    async with pool.acquire() as conn:
        return await repository.list_shipments_by_status(
            conn, status, limit=limit, created_after=created_after, after_id=after_id
        )


async def route_of(pool: asyncpg.Pool, shipment_id: uuid.UUID, *, limit: int) -> list[Point]:
    """The route so far: the newest ``limit`` points of the shipment, oldest first."""
    async with pool.acquire() as conn:
        return await repository.route(conn, shipment_id, limit=limit)


# --- retention -------------------------------------------------------------------------

# One retention pass at a time across replicas (a transaction-scoped advisory lock).
_THINNING_LOCK = 7_210_404


@dataclass(frozen=True)
class ThinningPass:
    shipments: int
    deleted: int


async def thin_history(
    pool: asyncpg.Pool, rule: domain.Thinning, *, now: datetime, shipments_per_transaction: int = 100
) -> ThinningPass:
    """Thin every shipment's history older than the rule's cutoff; returns what it did.

    Each shipment remembers up to where it was thinned, so a pass reads only the
    history that aged past the cutoff since the previous one.
    """
    if rule.keep_every_s <= 0:
        return ThinningPass(0, 0)
    # Only whole windows are thinned: the window the cutoff falls in waits for a later pass.
    until = rule.window_start(rule.cutoff(now))
    shipments = deleted = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _THINNING_LOCK):
                return ThinningPass(shipments, deleted)  # another replica is thinning right now
            candidates = await repository.shipments_to_thin(conn, until, limit=shipments_per_transaction)
            deleted_now = 0
            for candidate in candidates:
                recorded = await repository.location_times(conn, candidate.shipment_id, candidate.thinned_until, until)
                keep = {candidate.last_recorded_at} if candidate.last_recorded_at is not None else set()
                doomed = domain.points_to_thin(recorded, rule, now, keep=keep)
                deleted_now += await repository.delete_locations(conn, candidate.shipment_id, doomed)
                await repository.set_thinned_until(conn, candidate.shipment_id, until)
        shipments += len(candidates)
        deleted += deleted_now
        metrics.LOCATIONS_THINNED.inc(deleted_now)
        if len(candidates) < shipments_per_transaction:
            return ThinningPass(shipments, deleted)


async def count_by_status(pool: asyncpg.Pool) -> dict[str, int]:
    """Shipments per status (every status present, zero included)."""
    async with pool.acquire() as conn:
        counts = await repository.count_by_status(conn)
    return {status: counts.get(status, 0) for status in domain.STATUSES}
