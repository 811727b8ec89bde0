"""A courier simulator for `make run`: it picks up every new shipment and drives it to the buyer's door.

It plays the courier app against tracking's public API, as a real one would:
it lists the shipments waiting for pickup (``GET /shipments?status=label_created``
with the operator key), gets each one's courier token (``POST
/shipments/{id}/courier-token``), then drives along a straight-ish route from a
start point ~3 km away to the destination, posting a batch of GPS fixes every
1–2 s (``POST /shipments/{id}/locations``) until tracking says ``delivered``.
So a person who buys in the demo sees the marker move on the map page.

Run it in a thread (``CourierSimulator(...).run(stop_event)``) or as a process:
``python -m tweetshop_devstack.courier_sim --tracking-url http://127.0.0.1:8004``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

# Tracking's development default (tracking.config.DEV_OPERATOR_KEY); `make run` leaves TWEETSHOP_OPERATOR_KEY unset.
DEV_OPERATOR_KEY = "dev-operator-key"
ENV_OPERATOR_KEY = "TWEETSHOP_OPERATOR_KEY"
EARTH_RADIUS_M = 6_371_008.8
# Tracking refuses faster fixes (m/s): a courier never reports more.
MAX_REPORTED_SPEED_MPS = 100.0
# The last fix is this accurate, so tracking's geofence may call the parcel delivered.
DOOR_ACCURACY_M = 5.0


# --- geometry ----------------------------------------------------------------------------------------------------


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in metres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_phi, d_lambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def offset(lat: float, lon: float, bearing_deg: float, meters: float) -> tuple[float, float]:
    """The point ``meters`` away from (lat, lon) along ``bearing_deg`` (degrees from north)."""
    delta, theta = meters / EARTH_RADIUS_M, math.radians(bearing_deg)
    phi1, lambda1 = math.radians(lat), math.radians(lon)
    phi2 = math.asin(math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta))
    lambda2 = lambda1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1), math.cos(delta) - math.sin(phi1) * math.sin(phi2)
    )
    return math.degrees(phi2), (math.degrees(lambda2) + 540) % 360 - 180


def bearing(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial bearing from the first point to the second, degrees from north in [0, 360)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    d_lambda = math.radians(lon2 - lon1)
    y = math.sin(d_lambda) * math.cos(phi2)
    x = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(d_lambda)
    return (math.degrees(math.atan2(y, x)) + 360) % 360


@dataclass(frozen=True)
class Route:
    """A polyline from the start to the destination, with the distance travelled at each vertex."""

    vertices: tuple[tuple[float, float], ...]
    along_m: tuple[float, ...]

    @property
    def length_m(self) -> float:
        return self.along_m[-1]

    def at(self, travelled_m: float) -> tuple[float, float, float]:
        """(lat, lon, heading) after ``travelled_m`` metres; the destination itself once the route is done."""
        if travelled_m >= self.length_m:
            (lat_a, lon_a), (lat_b, lon_b) = self.vertices[-2], self.vertices[-1]
            return lat_b, lon_b, bearing(lat_a, lon_a, lat_b, lon_b)
        travelled_m = max(0.0, travelled_m)
        index = next(i for i in range(1, len(self.along_m)) if self.along_m[i] >= travelled_m)
        start, end = self.along_m[index - 1], self.along_m[index]
        share = (travelled_m - start) / (end - start) if end > start else 1.0
        (lat_a, lon_a), (lat_b, lon_b) = self.vertices[index - 1], self.vertices[index]
        return lat_a + (lat_b - lat_a) * share, lon_a + (lon_b - lon_a) * share, bearing(lat_a, lon_a, lat_b, lon_b)


def plan_route(
    dest_lat: float,
    dest_lon: float,
    rng: random.Random,
    *,
    start_distance_m: float = 3000.0,
    start: tuple[float, float] | None = None,
    bend_m: float = 150.0,
    vertices: int = 60,
) -> Route:
    """A straight-ish road to the destination, gently bent: from ``start``, else from ``start_distance_m`` away.

    The bend is at most ``bend_m`` (and 5% of the distance), zero at both ends.
    """
    if start is None:
        start = offset(dest_lat, dest_lon, rng.uniform(0, 360), start_distance_m)
    start_lat, start_lon = start
    towards = bearing(start_lat, start_lon, dest_lat, dest_lon)
    # At most 5% of the way sideways: a short last stretch stays as straight as a long one.
    bend = min(bend_m, 0.05 * distance_m(start_lat, start_lon, dest_lat, dest_lon))
    side = rng.choice((-1.0, 1.0)) * rng.uniform(0.3, 1.0) * bend
    points: list[tuple[float, float]] = []
    for i in range(vertices + 1):
        share = i / vertices
        # Straight line from start to destination, pushed sideways by a bend that is zero at both ends.
        lat = start_lat + (dest_lat - start_lat) * share
        lon = start_lon + (dest_lon - start_lon) * share
        points.append(offset(lat, lon, towards + 90, side * math.sin(math.pi * share)))
    points[-1] = (dest_lat, dest_lon)
    along = [0.0]
    for (lat_a, lon_a), (lat_b, lon_b) in itertools.pairwise(points):
        along.append(along[-1] + distance_m(lat_a, lon_a, lat_b, lon_b))
    return Route(tuple(points), tuple(along))


# --- driving -----------------------------------------------------------------------------------------------------


@dataclass
class Drive:
    """One shipment on its way: where the courier is on its route and when it reports next."""

    shipment_id: str
    token: str
    route: Route
    speed_mps: float
    travelled_m: float = 0.0
    last_step_at: float = 0.0
    next_post_at: float = 0.0
    pending: list[dict[str, Any]] = field(default_factory=list)  # fixes not accepted yet (resent: tracking dedupes)

    @property
    def arrived(self) -> bool:
        return self.travelled_m >= self.route.length_m


IN_FLIGHT = ("picked_up", "in_transit", "out_for_delivery")


def _message(response: httpx.Response) -> str:
    """The message of a JSON error answer, else the start of the body."""
    try:
        return str(response.json().get("message", ""))[:200]
    except ValueError:
        return response.text[:200]


def say(message: str) -> None:
    """Print a simulator message (stdout is the dev runner's log)."""
    print(f"courier-sim | {message}", flush=True)


class CourierSimulator:
    """Drives every shipment waiting for pickup to its destination, through tracking's HTTP API."""

    def __init__(
        self,
        tracking_url: str,
        operator_key: str = DEV_OPERATOR_KEY,
        *,
        speed_mps: float = 20.0,
        start_distance_m: float = 3000.0,
        step_every_s: tuple[float, float] = (1.0, 2.0),
        poll_every_s: float = 2.0,
        client: httpx.Client | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        report: Callable[[str], None] = say,
    ) -> None:
        if not 0 < speed_mps <= MAX_REPORTED_SPEED_MPS:
            raise ValueError(f"speed_mps must be in (0, {MAX_REPORTED_SPEED_MPS:g}]")
        self._client = client or httpx.Client(base_url=tracking_url.rstrip("/"), timeout=10.0)
        self._operator = {"Authorization": f"Bearer {operator_key}"}
        self._speed_mps = speed_mps
        self._start_distance_m = start_distance_m
        self._step_every_s = step_every_s
        self._poll_every_s = poll_every_s
        self._rng = rng or random.Random()
        self._clock = clock
        self._wall_clock = wall_clock
        self._report = report
        self._next_poll_at = 0.0
        self._adopted = False
        self._unreachable_reported = False
        self.drives: dict[str, Drive] = {}
        self.delivered: list[str] = []

    # The loop ------------------------------------------------------------------------------------------------------
    def run(self, stop_event: threading.Event) -> None:
        """Poll and drive until ``stop_event`` is set."""
        self._report(f"following {self._client.base_url} (new shipments every {self._poll_every_s:g} s)")
        try:
            while not stop_event.is_set():
                self.tick()
                stop_event.wait(self._seconds_to_next_work())
        finally:
            self._client.close()

    def tick(self) -> None:
        """One round: look for new shipments when it is time, and post every batch that is due."""
        now = self._clock()
        try:
            if now >= self._next_poll_at:
                self._next_poll_at = now + self._poll_every_s
                self._pick_up_new_shipments(now)
            for drive in list(self.drives.values()):
                if now >= drive.next_post_at:
                    self._step(drive, now)
            if self._unreachable_reported:
                self._report("tracking answers again")
                self._unreachable_reported = False
        except httpx.TransportError as exc:
            # tracking restarting (the supervisor brings it back): keep every drive and try again later.
            if not self._unreachable_reported:
                self._report(f"tracking unreachable ({type(exc).__name__}); retrying")
                self._unreachable_reported = True

    def _seconds_to_next_work(self) -> float:
        due = [self._next_poll_at, *(d.next_post_at for d in self.drives.values())]
        return min(max(0.05, min(due) - self._clock()), self._poll_every_s)

    # Picking up ------------------------------------------------------------------------------------------------------
    def _pick_up_new_shipments(self, now: float) -> None:
        if not self._adopted:
            # A restarted simulator (the dev runner restarts what dies) finishes the rounds it had started.
            for status in IN_FLIGHT:
                for shipment in self._list(status):
                    if shipment["id"] not in self.drives:
                        self._start(shipment, now)
            self._adopted = True
        for shipment in self._list("label_created"):
            if shipment["id"] not in self.drives:
                self._start(shipment, now)

    def _list(self, status: str) -> list[dict[str, Any]]:
        response = self._client.get("/shipments", params={"status": status, "limit": 100}, headers=self._operator)
        if response.status_code != 200:
            self._report(f"cannot list {status} shipments: {response.status_code} {_message(response)}")
            return []
        found: list[dict[str, Any]] = response.json()
        return found

    def _start(self, shipment: dict[str, Any], now: float) -> None:
        issued = self._client.post(f"/shipments/{shipment['id']}/courier-token", headers=self._operator)
        if issued.status_code != 200:
            self._report(f"no courier token for shipment {shipment['id']}: {issued.status_code} {_message(issued)}")
            return
        destination = shipment["destination"]
        last = shipment.get("last_location")
        route = plan_route(
            destination["lat"],
            destination["lon"],
            self._rng,
            start_distance_m=self._start_distance_m,
            start=(last["lat"], last["lon"]) if last else None,
        )
        drive = Drive(
            shipment_id=shipment["id"],
            token=issued.json()["courier_token"],
            route=route,
            speed_mps=self._speed_mps,
            last_step_at=now,
            next_post_at=now,  # the first fix at once: the parcel is picked up
        )
        self.drives[drive.shipment_id] = drive
        self._report(
            f"picked up shipment {drive.shipment_id} for {destination['city']}, {destination['country']} "
            f"({route.length_m / 1000:.1f} km at {self._speed_mps * 3.6:.0f} km/h)"
        )

    # Driving ---------------------------------------------------------------------------------------------------------
    def _step(self, drive: Drive, now: float) -> None:
        elapsed = max(0.0, now - drive.last_step_at)
        before = drive.travelled_m
        # Traffic: a little faster or slower each step, never over what tracking accepts.
        speed = min(MAX_REPORTED_SPEED_MPS, drive.speed_mps * self._rng.uniform(0.85, 1.15))
        drive.travelled_m = min(drive.route.length_m, before + speed * elapsed)
        drive.last_step_at = now
        drive.next_post_at = now + self._rng.uniform(*self._step_every_s)
        drive.pending.extend(self._fixes(drive, before, elapsed, speed))
        self._post(drive)

    def _fixes(self, drive: Drive, before: float, elapsed: float, speed: float) -> list[dict[str, Any]]:
        """About one fix per second since the last step (at least one), spread along the distance covered."""
        wall = self._wall_clock()
        count = max(1, round(elapsed))
        fixes = []
        for i in range(1, count + 1):
            share = i / count
            lat, lon, heading = drive.route.at(before + (drive.travelled_m - before) * share)
            at_door = drive.arrived and i == count
            fixes.append(
                {
                    "lat": round(lat, 7),
                    "lon": round(lon, 7),
                    "recorded_at": (wall - timedelta(seconds=elapsed * (1 - share))).isoformat(),
                    "speed": 0.0 if at_door else round(speed, 2),
                    "heading": round(heading, 1) % 360,
                    "accuracy": DOOR_ACCURACY_M if at_door else round(self._rng.uniform(4, 15), 1),
                }
            )
        return fixes

    def _post(self, drive: Drive) -> None:
        response = self._client.post(
            f"/shipments/{drive.shipment_id}/locations",
            json={"points": drive.pending},
            headers={"Authorization": f"Bearer {drive.token}"},
        )
        if response.status_code == 200:
            drive.pending.clear()
            status = response.json()["shipment"]["status"]
            if status == "delivered":
                self._finish(drive, "delivered")
            elif drive.arrived:
                # At the door but not delivered (the shipment is in an operator's hands): stop driving it.
                self._finish(drive, f"arrived, left {status}")
        elif response.status_code < 500:
            # Gone (404), closed or cancelled (409), its token replaced (403) or a refused batch: this drive is over.
            self._finish(drive, f"stopped: {response.status_code} {_message(response)}")
        # 5xx: the batch stays pending and goes again with the next step.

    def _finish(self, drive: Drive, outcome: str) -> None:
        del self.drives[drive.shipment_id]
        if outcome == "delivered":
            self.delivered.append(drive.shipment_id)
        self._report(f"shipment {drive.shipment_id}: {outcome}")


# --- process entry point -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tweetshop_devstack.courier_sim``: simulate couriers until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-url", default="http://127.0.0.1:8004", help="tracking's base URL")
    parser.add_argument(
        "--operator-key",
        default=os.environ.get(ENV_OPERATOR_KEY) or DEV_OPERATOR_KEY,
        help=f"tracking's operator key (default: ${ENV_OPERATOR_KEY}, else the development key)",
    )
    parser.add_argument("--speed", type=float, default=20.0, help="courier speed in m/s (default 20, i.e. 72 km/h)")
    parser.add_argument("--start-distance", type=float, default=3000.0, help="metres from the door where routes start")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for the same routes every run")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    simulator = CourierSimulator(
        args.tracking_url,
        args.operator_key,
        speed_mps=args.speed,
        start_distance_m=args.start_distance,
        rng=random.Random(args.seed),
    )
    simulator.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
