"""Tracking rules: the shipment state machine, point validation, geofence and ETA. Pure, no I/O."""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

ShipmentStatus = Literal[
    "label_created", "picked_up", "in_transit", "out_for_delivery", "delivered", "exception", "cancelled"
]
STATUSES: tuple[ShipmentStatus, ...] = get_args(ShipmentStatus)

# The way a parcel normally goes; locations only ever move it forward along this path.
FORWARD_PATH: tuple[ShipmentStatus, ...] = ("label_created", "picked_up", "in_transit", "out_for_delivery", "delivered")
TERMINAL: frozenset[ShipmentStatus] = frozenset({"delivered", "cancelled"})

ALLOWED_TRANSITIONS: dict[ShipmentStatus, frozenset[ShipmentStatus]] = {
    "label_created": frozenset({"picked_up", "exception", "cancelled"}),
    # Once the courier has the parcel, cancelling is a return, not a cancellation.
    "picked_up": frozenset({"in_transit", "exception"}),
    "in_transit": frozenset({"out_for_delivery", "delivered", "exception"}),
    "out_for_delivery": frozenset({"delivered", "in_transit", "exception"}),
    "exception": frozenset({"picked_up", "in_transit", "out_for_delivery", "delivered", "cancelled"}),
    "delivered": frozenset(),
    "cancelled": frozenset(),
}

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
# Below this the courier is standing still: an ETA from it would be "never", so the fallback speed is used.
MIN_MOVING_SPEED_MPS = 0.5
MAX_SPEED_MPS = 100.0
MAX_ACCURACY_M = 100_000.0


class InvalidTransition(Exception):
    """A status change the state machine does not allow."""


class InvalidPoint(ValueError):
    """A location point that cannot be stored; ``index`` is its place in the batch."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"point {index}: {reason}")
        self.index = index
        self.reason = reason


class ShipmentClosed(Exception):
    """The shipment is delivered or cancelled: it takes no more locations."""


@dataclass(frozen=True)
class Rules:
    """The tunable numbers of tracking (from settings)."""

    delivery_radius_m: float = 50
    out_for_delivery_radius_m: float = 1000
    geofence_max_accuracy_m: float = 100
    fallback_speed_mps: float = 8.0
    speed_window_s: float = 600
    max_future_s: float = 300
    max_age_s: float = 7 * 24 * 3600


@dataclass(frozen=True)
class Destination:
    city: str
    country: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Point:
    """One courier GPS fix."""

    lat: float
    lon: float
    recorded_at: datetime
    speed: float | None = None
    heading: float | None = None
    accuracy: float | None = None


@dataclass(frozen=True)
class Shipment:
    id: uuid.UUID
    order_id: uuid.UUID
    status: ShipmentStatus
    destination: Destination
    correlation_id: str
    last_location: Point | None = None
    recent_speed_mps: float | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    delivered_at: datetime | None = None


@dataclass(frozen=True)
class StatusChange:
    from_status: ShipmentStatus
    to_status: ShipmentStatus


@dataclass(frozen=True)
class Eta:
    """An estimate, never a promise: remaining great-circle distance over a recent average speed."""

    estimated_arrival: datetime
    remaining_m: float
    speed_mps: float
    speed_source: Literal["recent", "fallback"]


@dataclass(frozen=True)
class LocationOutcome:
    shipment: Shipment
    changes: tuple[StatusChange, ...]
    moved: bool


# --- state machine ---------------------------------------------------------------------


def transition(current: ShipmentStatus, target: ShipmentStatus) -> StatusChange:
    """One allowed status change, or InvalidTransition."""
    if target not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransition(f"a shipment cannot go from {current} to {target}")
    return StatusChange(current, target)


def advance_to(current: ShipmentStatus, target: ShipmentStatus) -> list[StatusChange]:
    """The steps along the forward path from ``current`` to ``target`` (none if already there or past it).

    A shipment off the path (exception, cancelled) is not moved by locations: an operator decides.
    """
    if current not in FORWARD_PATH or target not in FORWARD_PATH:
        return []
    start, end = FORWARD_PATH.index(current), FORWARD_PATH.index(target)
    steps: list[StatusChange] = []
    for index in range(start, end):
        nxt = FORWARD_PATH[index + 1]
        # in_transit → delivered is allowed directly, but walking the path names every stage once.
        steps.append(transition(FORWARD_PATH[index], nxt))
    return steps


def cancel_before_pickup(current: ShipmentStatus) -> StatusChange | None:
    """Cancelling an order cancels its shipment only while the parcel has not left (None otherwise)."""
    if current != "label_created":
        return None
    return transition(current, "cancelled")


# --- geometry --------------------------------------------------------------------------


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in metres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi = phi2 - phi1
    d_lambda = math.radians(lon2 - lon1)
    a = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def remaining_m(point: Point, destination: Destination) -> float:
    """Distance left from a point to the destination."""
    return distance_m(point.lat, point.lon, destination.lat, destination.lon)


def within_delivery_geofence(point: Point, destination: Destination, rules: Rules) -> bool:
    """The point is at the door: close enough, and the fix is accurate enough to say so."""
    if point.accuracy is not None and point.accuracy > rules.geofence_max_accuracy_m:
        return False
    return remaining_m(point, destination) <= rules.delivery_radius_m


def status_for_point(point: Point, destination: Destination, rules: Rules) -> ShipmentStatus:
    """Where on the forward path a parcel at this point is."""
    if within_delivery_geofence(point, destination, rules):
        return "delivered"
    if remaining_m(point, destination) <= rules.out_for_delivery_radius_m:
        return "out_for_delivery"
    return "in_transit"


# --- points ----------------------------------------------------------------------------


def _finite_in(value: float, low: float, high: float, *, high_open: bool = False) -> bool:
    if not math.isfinite(value) or value < low:
        return False
    return value < high if high_open else value <= high


def validate_point(index: int, point: Point, now: datetime, rules: Rules) -> None:
    """Raise InvalidPoint unless the point is on Earth, finite and recorded at a believable time."""
    latest, earliest = _time_bounds(now, rules)
    _validate_point(index, point, latest, earliest, rules)


def _time_bounds(now: datetime, rules: Rules) -> tuple[datetime, datetime]:
    """The newest and the oldest recorded_at a point may have."""
    return now + timedelta(seconds=rules.max_future_s), now - timedelta(seconds=rules.max_age_s)


def _validate_point(index: int, point: Point, latest: datetime, earliest: datetime, rules: Rules) -> None:
    if not _finite_in(point.lat, -90, 90):
        raise InvalidPoint(index, f"lat must be a finite number in [-90, 90], got {point.lat}")
    if not _finite_in(point.lon, -180, 180):
        raise InvalidPoint(index, f"lon must be a finite number in [-180, 180], got {point.lon}")
    if point.speed is not None and not _finite_in(point.speed, 0, MAX_SPEED_MPS):
        raise InvalidPoint(index, f"speed must be in [0, {MAX_SPEED_MPS:g}] m/s, got {point.speed}")
    if point.heading is not None and not _finite_in(point.heading, 0, 360, high_open=True):
        raise InvalidPoint(index, f"heading must be in [0, 360) degrees, got {point.heading}")
    if point.accuracy is not None and not _finite_in(point.accuracy, 0, MAX_ACCURACY_M):
        raise InvalidPoint(index, f"accuracy must be in [0, {MAX_ACCURACY_M:g}] m, got {point.accuracy}")
    if point.recorded_at.tzinfo is None or point.recorded_at.utcoffset() is None:
        raise InvalidPoint(index, "recorded_at must carry a timezone, e.g. 2025-01-01T12:00:00Z")
    if point.recorded_at > latest:
        raise InvalidPoint(index, f"recorded_at is more than {rules.max_future_s:g} s in the future")
    if point.recorded_at < earliest:
        raise InvalidPoint(index, f"recorded_at is older than {rules.max_age_s:g} s")


def validate_batch(points: Sequence[Point], now: datetime, rules: Rules) -> None:
    """Validate every point; the first bad one names its index."""
    latest, earliest = _time_bounds(now, rules)
    for index, point in enumerate(points):
        _validate_point(index, point, latest, earliest, rules)


def apply_points(shipment: Shipment, points: Iterable[Point], rules: Rules) -> LocationOutcome:
    """Move the shipment with newly stored points.

    Points older than the current location are kept in history but never move the
    parcel backwards; newer ones are walked in time order, each possibly moving the
    status forward (first fix: picked up and in transit; near the door: delivered).
    """
    if shipment.status in TERMINAL:
        raise ShipmentClosed(f"shipment is {shipment.status}")
    last = shipment.last_location
    newer = sorted((p for p in points if last is None or p.recorded_at > last.recorded_at), key=lambda p: p.recorded_at)
    status = shipment.status
    changes: list[StatusChange] = []
    delivered_at = shipment.delivered_at
    for point in newer:
        last = point
        steps = advance_to(status, status_for_point(point, shipment.destination, rules))
        if steps:
            changes.extend(steps)
            status = steps[-1].to_status
        if status == "delivered":
            delivered_at = point.recorded_at
            break  # the parcel is at the door: later fixes are the courier leaving, not the parcel
    moved = last is not shipment.last_location
    updated = replace(shipment, status=status, last_location=last, delivered_at=delivered_at)
    return LocationOutcome(updated, tuple(changes), moved)


def with_live_locations(shipment: Shipment, points: Sequence[Point]) -> tuple[Shipment, list[Point]]:
    """The shipment as a live watcher sees it after these location updates, and the points it took.

    A point older than what the watcher already shows is stale and left out; a closed shipment takes none.
    One copy of the shipment for the lot, not one per point (a courier's batch is 50 points).
    """
    if shipment.status in TERMINAL:
        return shipment, []
    newest = shipment.last_location
    taken: list[Point] = []
    for point in points:
        if newest is None or point.recorded_at > newest.recorded_at:
            newest = point
            taken.append(point)
    return (replace(shipment, last_location=newest) if taken else shipment), taken


# --- ETA -------------------------------------------------------------------------------


def average_speed_mps(points: Sequence[Point]) -> float | None:
    """Recent average speed: the mean of reported speeds, else distance over time of the track."""
    reported = [p.speed for p in points if p.speed is not None]
    if reported:
        return sum(reported) / len(reported)
    track = sorted(points, key=lambda p: p.recorded_at)
    if len(track) < 2:
        return None
    span = (track[-1].recorded_at - track[0].recorded_at).total_seconds()
    if span <= 0:
        return None
    travelled = sum(distance_m(a.lat, a.lon, b.lat, b.lon) for a, b in itertools.pairwise(track))
    return travelled / span


def estimate_eta(shipment: Shipment, now: datetime, rules: Rules) -> Eta | None:
    """When the parcel should arrive, as an estimate; None before the first location and once it is closed."""
    last = shipment.last_location
    if last is None or shipment.status in TERMINAL:
        return None
    left = remaining_m(last, shipment.destination)
    recent = shipment.recent_speed_mps
    source: Literal["recent", "fallback"]
    if recent is not None and recent >= MIN_MOVING_SPEED_MPS:
        speed, source = recent, "recent"
    else:
        speed, source = rules.fallback_speed_mps, "fallback"
    arrival = last.recorded_at + timedelta(seconds=left / speed)
    # A courier silent for longer than the estimate has not arrived yet: never promise the past.
    return Eta(estimated_arrival=max(arrival, now), remaining_m=left, speed_mps=speed, speed_source=source)


# --- retention -------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Thinning:
    """Retention of location history: points older than ``older_than_s`` keep one per ``keep_every_s`` window."""

    keep_every_s: float
    older_than_s: float

    def cutoff(self, now: datetime) -> datetime:
        """Points recorded before this are thinned."""
        return now - timedelta(seconds=self.older_than_s)

    def window_of(self, recorded_at: datetime) -> int:
        """The window a point falls in; windows are aligned on the epoch so every run (and replica) agrees."""
        return math.floor((recorded_at - _EPOCH).total_seconds() / self.keep_every_s)

    def window_start(self, recorded_at: datetime) -> datetime:
        """Where the window of ``recorded_at`` begins."""
        return _EPOCH + timedelta(seconds=self.window_of(recorded_at) * self.keep_every_s)


def points_to_thin(
    recorded: Iterable[datetime], rule: Thinning, now: datetime, *, keep: Collection[datetime] = ()
) -> list[datetime]:
    """The recorded_at of the points a retention pass deletes, oldest first.

    Only points before the cutoff are touched, and only whole windows: a window the
    cutoff cuts through waits for the next pass, so a later pass never has to undo
    an earlier one (it finds exactly one point per old window and deletes nothing).
    The first point of each window stays, and so does every point in ``keep`` (the
    shipment's current location, which the shipment row repeats).
    """
    if rule.keep_every_s <= 0:
        return []
    last_whole_window = rule.window_of(rule.cutoff(now)) - 1
    kept_windows: set[int] = set()
    doomed: list[datetime] = []
    for recorded_at in sorted(recorded):
        window = rule.window_of(recorded_at)
        if window > last_whole_window:
            break
        if window not in kept_windows:
            kept_windows.add(window)
        elif recorded_at not in keep:
            doomed.append(recorded_at)
    return doomed
