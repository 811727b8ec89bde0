"""Tracking's pure rules: state machine, point validation, geofence, out-of-order points, ETA."""

from __future__ import annotations

import itertools
import math
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from tracking import domain
from tracking.domain import Destination, Point, Rules, Shipment, StatusChange

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
RULES = Rules()
# Paris, Notre-Dame; a point ~0.01° further north is ~1.1 km away.
DEST = Destination(city="Paris", country="FR", lat=48.8530, lon=2.3499)


def shipment(status: domain.ShipmentStatus = "label_created", last: Point | None = None) -> Shipment:
    return Shipment(
        id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        status=status,
        destination=DEST,
        correlation_id="corr",
        last_location=last,
    )


def at(seconds_ago: float, lat: float = 48.90, lon: float = 2.3499, **extra: float) -> Point:
    return Point(lat=lat, lon=lon, recorded_at=NOW - timedelta(seconds=seconds_ago), **extra)


# --- state machine ---------------------------------------------------------------------


def test_the_forward_path_is_allowed_step_by_step() -> None:
    path = domain.FORWARD_PATH
    for current, nxt in itertools.pairwise(path):
        assert domain.transition(current, nxt) == StatusChange(current, nxt)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("delivered", "in_transit"),
        ("cancelled", "picked_up"),
        ("in_transit", "label_created"),
        ("picked_up", "cancelled"),
        ("label_created", "delivered"),
    ],
)
def test_a_shipment_never_moves_backwards_or_out_of_a_closed_status(
    current: domain.ShipmentStatus, target: domain.ShipmentStatus
) -> None:
    with pytest.raises(domain.InvalidTransition):
        domain.transition(current, target)


def test_closed_statuses_allow_no_transition_at_all() -> None:
    for closed in domain.TERMINAL:
        assert domain.ALLOWED_TRANSITIONS[closed] == frozenset()


def test_advancing_from_label_created_to_in_transit_passes_through_picked_up() -> None:
    assert domain.advance_to("label_created", "in_transit") == [
        StatusChange("label_created", "picked_up"),
        StatusChange("picked_up", "in_transit"),
    ]


def test_advancing_to_where_the_shipment_already_is_or_behind_it_changes_nothing() -> None:
    assert domain.advance_to("in_transit", "in_transit") == []
    assert domain.advance_to("out_for_delivery", "in_transit") == []


def test_a_shipment_in_exception_is_not_moved_by_locations() -> None:
    assert domain.advance_to("exception", "delivered") == []


def test_cancelling_works_only_before_pickup() -> None:
    assert domain.cancel_before_pickup("label_created") == StatusChange("label_created", "cancelled")
    assert domain.cancel_before_pickup("picked_up") is None
    assert domain.cancel_before_pickup("in_transit") is None
    assert domain.cancel_before_pickup("cancelled") is None


# --- geometry and geofence -------------------------------------------------------------


def test_distance_matches_a_known_great_circle() -> None:
    # Paris → London is about 343.5 km.
    assert domain.distance_m(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343_500, rel=0.005)
    assert domain.distance_m(10, 20, 10, 20) == 0


def test_a_point_within_the_radius_is_delivered_and_one_outside_is_not() -> None:
    inside = Point(lat=DEST.lat + 0.0003, lon=DEST.lon, recorded_at=NOW)  # ~33 m
    outside = Point(lat=DEST.lat + 0.0006, lon=DEST.lon, recorded_at=NOW)  # ~67 m
    assert domain.within_delivery_geofence(inside, DEST, RULES)
    assert not domain.within_delivery_geofence(outside, DEST, RULES)


def test_an_inaccurate_fix_at_the_door_does_not_mark_the_parcel_delivered() -> None:
    vague = Point(lat=DEST.lat, lon=DEST.lon, recorded_at=NOW, accuracy=500)
    assert not domain.within_delivery_geofence(vague, DEST, RULES)
    assert domain.status_for_point(vague, DEST, RULES) == "out_for_delivery"


def test_points_map_to_in_transit_out_for_delivery_and_delivered_by_distance() -> None:
    assert domain.status_for_point(at(0, lat=48.95), DEST, RULES) == "in_transit"
    assert domain.status_for_point(at(0, lat=DEST.lat + 0.005), DEST, RULES) == "out_for_delivery"
    assert domain.status_for_point(at(0, lat=DEST.lat), DEST, RULES) == "delivered"


# --- point validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "reason"),
    [
        (Point(lat=91, lon=0, recorded_at=NOW), "lat"),
        (Point(lat=-90.5, lon=0, recorded_at=NOW), "lat"),
        (Point(lat=0, lon=180.01, recorded_at=NOW), "lon"),
        (Point(lat=math.nan, lon=0, recorded_at=NOW), "lat"),
        (Point(lat=0, lon=math.inf, recorded_at=NOW), "lon"),
        (Point(lat=0, lon=0, recorded_at=NOW, speed=-1), "speed"),
        (Point(lat=0, lon=0, recorded_at=NOW, speed=math.nan), "speed"),
        (Point(lat=0, lon=0, recorded_at=NOW, heading=360), "heading"),
        (Point(lat=0, lon=0, recorded_at=NOW, accuracy=math.inf), "accuracy"),
        (Point(lat=0, lon=0, recorded_at=datetime(2025, 6, 1, 12, 0)), "timezone"),
        (Point(lat=0, lon=0, recorded_at=NOW + timedelta(minutes=6)), "future"),
        (Point(lat=0, lon=0, recorded_at=NOW - timedelta(days=8)), "older"),
    ],
)
def test_a_point_off_earth_not_finite_or_at_an_unbelievable_time_is_refused(point: Point, reason: str) -> None:
    with pytest.raises(domain.InvalidPoint) as refused:
        domain.validate_point(3, point, NOW, RULES)
    assert refused.value.index == 3
    assert reason in str(refused.value)


def test_a_point_slightly_ahead_of_the_server_clock_or_days_old_is_accepted() -> None:
    domain.validate_point(0, Point(lat=0, lon=0, recorded_at=NOW + timedelta(minutes=4)), NOW, RULES)
    domain.validate_point(0, Point(lat=-90, lon=180, recorded_at=NOW - timedelta(days=6)), NOW, RULES)


def test_a_batch_names_the_first_bad_point() -> None:
    batch = [at(10), at(5), Point(lat=100, lon=0, recorded_at=NOW)]
    with pytest.raises(domain.InvalidPoint) as refused:
        domain.validate_batch(batch, NOW, RULES)
    assert refused.value.index == 2


# --- applying points -------------------------------------------------------------------


def test_the_first_location_moves_a_new_shipment_to_in_transit_via_picked_up() -> None:
    outcome = domain.apply_points(shipment(), [at(30)], RULES)
    assert outcome.shipment.status == "in_transit"
    assert outcome.changes == (
        StatusChange("label_created", "picked_up"),
        StatusChange("picked_up", "in_transit"),
    )
    assert outcome.moved


def test_the_newest_point_of_a_batch_becomes_the_last_location_whatever_the_order_sent() -> None:
    newest, older = at(10, lat=48.91), at(20, lat=48.92)
    outcome = domain.apply_points(shipment(), [newest, older], RULES)
    assert outcome.shipment.last_location == newest


def test_an_out_of_order_point_does_not_move_the_last_location_backwards() -> None:
    current = at(10, lat=48.91)
    moving = shipment("in_transit", last=current)
    outcome = domain.apply_points(moving, [at(60, lat=48.99)], RULES)
    assert outcome.shipment.last_location == current
    assert not outcome.moved
    assert outcome.changes == ()


def test_an_out_of_order_point_at_the_door_does_not_deliver_the_parcel() -> None:
    moving = shipment("in_transit", last=at(10))
    outcome = domain.apply_points(moving, [at(60, lat=DEST.lat)], RULES)
    assert outcome.shipment.status == "in_transit"


def test_arriving_at_the_door_delivers_through_out_for_delivery_and_keeps_the_delivery_point() -> None:
    moving = shipment("in_transit", last=at(60))
    door, leaving = at(20, lat=DEST.lat), at(10, lat=48.88)
    outcome = domain.apply_points(moving, [leaving, door], RULES)
    assert outcome.shipment.status == "delivered"
    assert [c.to_status for c in outcome.changes] == ["out_for_delivery", "delivered"]
    assert outcome.shipment.last_location == door
    assert outcome.shipment.delivered_at == door.recorded_at


def test_a_closed_shipment_takes_no_more_points() -> None:
    with pytest.raises(domain.ShipmentClosed):
        domain.apply_points(shipment("cancelled"), [at(5)], RULES)


def test_a_live_watcher_skips_a_point_older_than_the_one_it_shows() -> None:
    shown = shipment("in_transit", last=at(10))
    assert domain.with_live_locations(shown, [at(20)]) == (shown, [])
    newer = at(5)
    moved, taken = domain.with_live_locations(shown, [newer])
    assert taken == [newer]
    assert moved.last_location == newer


def test_several_live_points_at_once_take_each_one_newer_than_the_last_taken() -> None:
    shown = shipment("in_transit", last=at(10))
    points = [at(12), at(8), at(9), at(6), at(7), at(10), at(3)]  # at(n): n minutes ago
    moved, taken = domain.with_live_locations(shown, points)
    assert taken == [at(8), at(6), at(3)]
    assert moved == replace(shown, last_location=at(3))
    assert domain.with_live_locations(shown, [at(11)]) == (shown, [])
    closed = shipment("delivered", last=at(10))
    assert domain.with_live_locations(closed, [at(1)]) == (closed, [])


# --- ETA -------------------------------------------------------------------------------


def test_no_eta_before_the_first_location_nor_once_delivered() -> None:
    assert domain.estimate_eta(shipment(), NOW, RULES) is None
    assert domain.estimate_eta(shipment("delivered", last=at(0, lat=DEST.lat)), NOW, RULES) is None


def test_eta_is_remaining_distance_over_the_recent_speed() -> None:
    last = at(0, lat=DEST.lat + 0.09)  # ~10 km north
    moving = replace(shipment("in_transit", last=last), recent_speed_mps=10.0)
    eta = domain.estimate_eta(moving, NOW, RULES)
    assert eta is not None
    assert eta.remaining_m == pytest.approx(10_007, rel=0.01)
    assert eta.speed_source == "recent"
    assert eta.estimated_arrival == NOW + timedelta(seconds=eta.remaining_m / 10.0)


def test_eta_falls_back_to_a_typical_speed_when_the_courier_stands_still_or_is_unknown() -> None:
    last = at(0, lat=DEST.lat + 0.09)
    for recent in (None, 0.1):
        eta = domain.estimate_eta(replace(shipment("in_transit", last=last), recent_speed_mps=recent), NOW, RULES)
        assert eta is not None
        assert eta.speed_source == "fallback"
        assert eta.speed_mps == RULES.fallback_speed_mps


def test_eta_never_lies_in_the_past_when_the_courier_went_silent() -> None:
    stale = at(3600, lat=DEST.lat + 0.01)  # an hour ago, ~1 km away
    eta = domain.estimate_eta(replace(shipment("in_transit", last=stale), recent_speed_mps=10), NOW, RULES)
    assert eta is not None
    assert eta.estimated_arrival == NOW


def test_average_speed_prefers_reported_speeds_then_the_track() -> None:
    assert domain.average_speed_mps([at(20, speed=6), at(10, speed=10)]) == 8
    # ~1112 m in 100 s
    track = [at(100, lat=48.90), at(0, lat=48.91)]
    assert domain.average_speed_mps(track) == pytest.approx(11.12, rel=0.01)
    assert domain.average_speed_mps([at(0)]) is None
