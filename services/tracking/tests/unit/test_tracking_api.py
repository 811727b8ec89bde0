"""Request and response bodies: what a courier may send, what a buyer sees."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from tracking.api import LocationBatchIn, RouteOut, ShipmentOut
from tracking.config import TrackingSettings
from tracking.domain import Destination, Eta, Point, Shipment
from tracking.main import page_config

FIX = {"lat": 48.85, "lon": 2.35, "recorded_at": "2025-06-01T12:00:00Z", "speed": 7.5}


def test_a_batch_may_be_a_bare_array_or_an_object_with_points() -> None:
    assert LocationBatchIn.model_validate([FIX]) == LocationBatchIn.model_validate({"points": [FIX]})


@pytest.mark.parametrize(
    "bad",
    [
        {**FIX, "lat": 90.5},
        {**FIX, "lon": float("nan")},
        {**FIX, "speed": float("inf")},
        {**FIX, "heading": 360},
        {**FIX, "altitude": 30},
        {k: v for k, v in FIX.items() if k != "recorded_at"},
    ],
)
def test_a_fix_out_of_range_not_finite_unknown_or_incomplete_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        LocationBatchIn.model_validate([bad])


def test_the_eta_is_labelled_as_an_estimate() -> None:
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    shipment = Shipment(
        id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        status="in_transit",
        destination=Destination("Paris", "FR", 48.85, 2.35),
        correlation_id="c",
        last_location=Point(48.9, 2.35, now),
    )
    out = ShipmentOut.of(shipment, Eta(now, 5559.123, 8.0, "fallback")).model_dump(mode="json")
    assert out["eta"] == {
        "estimated_arrival": "2025-06-01T12:00:00Z",
        "remaining_m": 5559.1,
        "speed_mps": 8.0,
        "speed_source": "fallback",
        "is_estimate": True,
    }
    assert ShipmentOut.of(shipment, None).eta is None


def test_a_route_longer_than_asked_keeps_its_newest_points_and_says_it_was_cut() -> None:
    start = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    points = [Point(48.0 + i / 100, 2.35, start.replace(minute=i)) for i in range(4)]
    cut = RouteOut.of(uuid.uuid4(), points, limit=3)
    assert ([p.lat for p in cut.points], cut.truncated) == ([48.01, 48.02, 48.03], True)
    whole = RouteOut.of(uuid.uuid4(), points[:3], limit=3)
    assert (len(whole.points), whole.truncated) == (3, False)


def test_the_map_page_settings_cannot_close_their_script_element() -> None:
    settings = TrackingSettings(map_tile_url="https://tiles.example/{z}/{x}/{y}.png", map_tile_attribution="</script>x")
    text = page_config(settings, uuid.UUID(int=1))
    assert "</" not in text
    assert json.loads(text)["tileAttribution"] == "</script>x"
