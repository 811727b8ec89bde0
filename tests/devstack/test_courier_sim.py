"""The courier simulator of `make run`: its routes, how it talks to tracking, and a real delivery end to end."""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tracking.config import DEV_OPERATOR_KEY as TRACKING_DEV_OPERATOR_KEY
from tweetshop_contracts import Destination
from tweetshop_devstack import courier_sim
from tweetshop_devstack.courier_sim import CourierSimulator, distance_m, plan_route
from tweetshop_devstack.kafka_probe import publish_events
from tweetshop_devstack.testing import eventually, order_paid, run_sync
from tweetshop_platform.auth import hash_secret

MARSEILLE = (43.2965, 5.3698)


# --- routes --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_a_route_starts_about_3_km_away_and_ends_at_the_door(seed: int) -> None:
    route = plan_route(*MARSEILLE, random.Random(seed))
    start, end = route.vertices[0], route.vertices[-1]
    assert distance_m(*start, *MARSEILLE) == pytest.approx(3000, rel=0.01)
    assert end == MARSEILLE
    # Straight-ish: a gentle bend makes it at most a few percent longer than the straight line.
    assert 3000 <= route.length_m <= 3000 * 1.03
    assert route.at(route.length_m + 10)[:2] == MARSEILLE


def test_a_route_can_resume_from_where_the_courier_is() -> None:
    here = (43.30, 5.38)
    route = plan_route(*MARSEILLE, random.Random(1), start=here)
    assert route.vertices[0] == pytest.approx(here)
    assert route.length_m == pytest.approx(distance_m(*here, *MARSEILLE), rel=0.03)


def test_progress_along_a_route_only_gets_closer_to_the_door_overall() -> None:
    route = plan_route(*MARSEILLE, random.Random(7))
    remaining = [distance_m(*route.at(route.length_m * i / 10)[:2], *MARSEILLE) for i in range(11)]
    assert remaining == sorted(remaining, reverse=True)
    assert remaining[-1] == 0


def test_the_simulator_uses_trackings_development_operator_key_by_default() -> None:
    assert courier_sim.DEV_OPERATOR_KEY == TRACKING_DEV_OPERATOR_KEY


# --- against a fake tracking (no network, fake clocks) -------------------------------------------------------------


class FakeTracking:
    """Answers like tracking: one shipment to pick up, delivered once a fix is at the door."""

    def __init__(self, shipment_id: str, *, refuse_locations_with: int | None = None) -> None:
        self.shipment = {
            "id": shipment_id,
            "status": "label_created",
            "destination": {"city": "Marseille", "country": "FR", "lat": MARSEILLE[0], "lon": MARSEILLE[1]},
            "last_location": None,
        }
        self.batches: list[list[dict[str, Any]]] = []
        self.refuse_locations_with = refuse_locations_with
        self.down = False

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        if path == "/shipments" and request.method == "GET":
            assert request.headers["authorization"] == "Bearer op-key"
            wanted = request.url.params["status"]
            return httpx.Response(200, json=[self.shipment] if self.shipment["status"] == wanted else [])
        if path.endswith("/courier-token"):
            assert request.headers["authorization"] == "Bearer op-key"
            return httpx.Response(200, json={"shipment_id": self.shipment["id"], "courier_token": "tsc_x"})
        if path.endswith("/locations"):
            assert request.headers["authorization"] == "Bearer tsc_x"
            if self.refuse_locations_with is not None:
                body = {"error": "shipment_closed", "message": "shipment is cancelled"}
                return httpx.Response(self.refuse_locations_with, json=body)
            points = json.loads(request.content)["points"]
            self.batches.append(points)
            for p in points:
                at_door = distance_m(p["lat"], p["lon"], *MARSEILLE) <= 50 and p["accuracy"] <= 100
                self.shipment["status"] = "delivered" if at_door else "in_transit"
                if at_door:
                    break
            return httpx.Response(200, json={"accepted": len(points), "duplicates": 0, "shipment": self.shipment})
        return httpx.Response(404, json={"error": "not_found", "message": path})


class Clocks:
    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += timedelta(seconds=seconds)


def simulator_for(tracking: FakeTracking, clocks: Clocks, messages: list[str]) -> CourierSimulator:
    client = httpx.Client(base_url="http://tracking.test", transport=httpx.MockTransport(tracking.handle))
    return CourierSimulator(
        "http://tracking.test",
        "op-key",
        client=client,
        rng=random.Random(3),
        clock=lambda: clocks.now,
        wall_clock=lambda: clocks.wall,
        report=messages.append,
    )


def drive_until(sim: CourierSimulator, clocks: Clocks, done: Callable[[], bool], limit_s: float = 1000) -> None:
    started = clocks.now
    while not done() and clocks.now - started < limit_s:
        sim.tick()
        clocks.advance(0.1)


def test_the_simulator_drives_a_new_shipment_to_the_door_in_batches_every_one_to_two_seconds() -> None:
    tracking, clocks, messages = FakeTracking(str(uuid.uuid4())), Clocks(), []
    sim = simulator_for(tracking, clocks, messages)
    drive_until(sim, clocks, lambda: bool(sim.delivered))

    assert sim.delivered == [tracking.shipment["id"]]
    assert sim.drives == {}
    fixes = [p for batch in tracking.batches for p in batch]
    times = [datetime.fromisoformat(p["recorded_at"]) for p in fixes]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert distance_m(fixes[0]["lat"], fixes[0]["lon"], *MARSEILLE) == pytest.approx(3000, rel=0.05)
    # Delivered by the geofence: the last fix is within 50 m of the door.
    assert distance_m(fixes[-1]["lat"], fixes[-1]["lon"], *MARSEILLE) <= 50
    assert all(0 <= p["speed"] <= 100 and 0 <= p["heading"] < 360 for p in fixes)
    # 3 km at ~20 m/s: a little over two and a half minutes of driving, posted every 1-2 s.
    driven = (times[-1] - times[0]).total_seconds()
    assert 120 <= driven <= 190
    assert len(tracking.batches) >= driven / 2
    assert any("picked up" in m for m in messages) and any("delivered" in m for m in messages)


def test_a_drive_survives_tracking_being_down_and_resends_what_was_not_accepted() -> None:
    tracking, clocks, messages = FakeTracking(str(uuid.uuid4())), Clocks(), []
    sim = simulator_for(tracking, clocks, messages)
    drive_until(sim, clocks, lambda: len(tracking.batches) >= 3)
    tracking.down = True
    drive_until(sim, clocks, lambda: False, limit_s=10)
    assert list(sim.drives) == [tracking.shipment["id"]]
    tracking.down = False
    drive_until(sim, clocks, lambda: len(tracking.batches) >= 4)
    # The batch that could not be sent arrives with the next one: no gap in the route.
    resent = tracking.batches[3]
    assert len(resent) >= 10
    assert any("unreachable" in m for m in messages) and any("answers again" in m for m in messages)


def test_a_shipment_tracking_refuses_is_dropped() -> None:
    tracking, clocks, messages = FakeTracking(str(uuid.uuid4()), refuse_locations_with=409), Clocks(), []
    sim = simulator_for(tracking, clocks, messages)
    sim.tick()
    assert sim.drives == {}
    assert sim.delivered == []
    assert any("409" in m and "cancelled" in m for m in messages)


# --- against a real tracking ---------------------------------------------------------------------------------------


def test_the_simulator_delivers_a_real_paid_order(service_process: Any, kafka_bootstrap: str) -> None:
    tracking = service_process.start("tracking")  # the development operator key, as in `make run`
    order_id = uuid.uuid4()
    paid = order_paid(
        order_id,
        destination=Destination(city="Marseille", country="FR", lat=MARSEILLE[0], lon=MARSEILLE[1]),
        amount_minor=1200,
        buyer_access_sha256=hash_secret("tso_the-buyer"),
    )
    run_sync(publish_events(kafka_bootstrap, service_process.topic_namespace, paid))

    # A short, fast round so the test takes seconds: 600 m at 60 m/s, a batch every 0.2-0.4 s.
    sim = CourierSimulator(
        tracking.base_url, speed_mps=60, start_distance_m=600, step_every_s=(0.2, 0.4), poll_every_s=0.3
    )
    stop = threading.Event()
    runner = threading.Thread(target=sim.run, args=(stop,), daemon=True)
    runner.start()
    try:
        buyer = {"Authorization": "Bearer tso_the-buyer"}
        with httpx.Client(base_url=tracking.base_url, timeout=10, headers=buyer) as api:

            def delivered() -> dict[str, Any] | None:
                answer = api.get("/shipments", params={"order_id": str(order_id)})
                found = answer.json() if answer.status_code == 200 else []
                return found[0] if found and found[0].get("status") == "delivered" else None

            shipment = eventually(delivered, timeout=45, interval=0.3, what="the shipment to be delivered")
            assert shipment.get("status") == "delivered", shipment
            route = api.get(f"/shipments/{shipment['id']}/locations").json()["points"]
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    assert distance_m(route[0]["lat"], route[0]["lon"], *MARSEILLE) == pytest.approx(600, rel=0.1)
    assert distance_m(route[-1]["lat"], route[-1]["lon"], *MARSEILLE) <= 50  # tracking's delivery radius
    assert len(route) >= 5
