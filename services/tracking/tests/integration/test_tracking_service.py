"""tracking as a process against a real broker and a real Postgres: the test plays checkout and the courier."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from tweetshop_contracts import (
    Destination,
    Envelope,
    OrderBuyerErased,
    OrderPaid,
    OrderRefunded,
    ShipmentCreated,
    ShipmentLocationUpdated,
    ShipmentStatusChanged,
    topics,
)
from tweetshop_devstack import testing
from tweetshop_devstack.testing import eventually_async, metric_value, read_events
from tweetshop_platform.auth import hash_secret

OPERATOR_KEY = "integration-operator-key"
PARIS = Destination(city="Paris", country="FR", lat=48.8530, lon=2.3499)


def buyer_token(order_id: uuid.UUID) -> str:
    """The order's access token as checkout would have issued it (only its hash travels on the topic)."""
    return f"tso_buyer-of-{order_id.hex}"


def as_buyer(order_id: uuid.UUID) -> dict[str, str]:
    return {"Authorization": f"Bearer {buyer_token(order_id)}"}


# --- helpers: checkout's side of the broker, a topic reader, an SSE reader -------------------


class Checkout:
    """Publishes order events the way checkout does (namespaced topic, key = order id)."""

    def __init__(self, bootstrap: str, namespace: str) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        self._topic = namespace + topics.CHECKOUT_ORDERS

    async def __aenter__(self) -> Checkout:
        await self._producer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._producer.stop()

    async def publish(self, event: Envelope) -> None:
        headers = [(k, v.encode()) for k, v in event.headers().items()]
        await self._producer.send_and_wait(self._topic, event.to_bytes(), key=event.key().encode(), headers=headers)


def order_paid(order_id: uuid.UUID) -> OrderPaid:
    return testing.order_paid(order_id, destination=PARIS, buyer_access_sha256=hash_secret(buyer_token(order_id)))


@contextlib.asynccontextmanager
async def sse_events(
    base_url: str, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[asyncio.Queue[tuple[str, dict[str, Any]]]]:
    """A live stream read in the background: a queue of (event name, data)."""
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    opened = asyncio.Event()

    async def read() -> None:
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=None) as client,
            client.stream("GET", path, headers=headers) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            opened.set()
            name = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    await queue.put((name, json.loads(line[len("data: ") :])))

    task = asyncio.create_task(read())
    await asyncio.wait_for(opened.wait(), 10)
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def next_event(
    queue: asyncio.Queue[tuple[str, dict[str, Any]]], accept: Callable[[str, dict[str, Any]], bool], timeout: float = 15
) -> tuple[str, dict[str, Any]]:
    async def first() -> tuple[str, dict[str, Any]]:
        while True:
            name, data = await queue.get()
            if accept(name, data):
                return name, data

    return await asyncio.wait_for(first(), timeout)


def metric(client: httpx.Client, name: str) -> float:
    return metric_value(client.get("/metrics").text, name)


@pytest.fixture
def tracking(service_process: Any) -> Any:
    """A running tracking process (ready: database and broker answer) with a known operator key."""
    return service_process.start("tracking", env={"TWEETSHOP_OPERATOR_KEY": OPERATOR_KEY})


# --- tests -----------------------------------------------------------------------------


async def test_a_paid_order_gets_exactly_one_shipment_and_a_refund_before_pickup_cancels_it(
    tracking: Any, service_process: Any, kafka_bootstrap: str
) -> None:
    namespace = service_process.topic_namespace
    order_id, refunded_order_id = uuid.uuid4(), uuid.uuid4()
    paid = order_paid(order_id)
    async with Checkout(kafka_bootstrap, namespace) as checkout:
        await checkout.publish(paid)
        await checkout.publish(paid)  # redelivered: same event_id
        await checkout.publish(order_paid(order_id))  # replayed by checkout: a new event_id, same order
        await checkout.publish(order_paid(refunded_order_id))

        async with httpx.AsyncClient(base_url=tracking.base_url) as api:

            async def shipments_of(order: uuid.UUID) -> list[dict[str, Any]]:
                response = await api.get("/shipments", params={"order_id": str(order)}, headers=as_buyer(order))
                if response.status_code == 404:
                    return []  # not created yet: until then nobody can read it
                assert response.status_code == 200, response.text
                return list(response.json())

            [shipment] = await eventually_async(lambda: shipments_of(order_id))
            assert shipment["status"] == "label_created"
            assert shipment["order_id"] == str(order_id)
            assert shipment["last_location"] is None
            assert shipment["eta"] is None

            [to_cancel] = await eventually_async(lambda: shipments_of(refunded_order_id))
            await checkout.publish(
                OrderRefunded(
                    producer="checkout",
                    correlation_id="corr-refund",
                    order_id=refunded_order_id,
                    product_id=uuid.uuid4(),
                    quantity=1,
                    amount_minor=2500,
                    refunded_total_minor=2500,
                    currency="EUR",
                    full=True,
                    restock=True,
                )
            )
            cancelled = await eventually_async(
                lambda: _status_is(shipments_of(refunded_order_id), "cancelled"), timeout=20
            )
            assert cancelled[0]["id"] == to_cancel["id"]

            # Only the duplicate-free history is on the topic: one ShipmentCreated per order.
            await asyncio.sleep(1)  # let any (wrong) second ShipmentCreated reach the topic too
            events = await read_events(
                kafka_bootstrap,
                namespace + topics.TRACKING_SHIPMENTS,
                topics.TRACKING_SHIPMENTS,
                until=lambda seen: any(e.event_type == "ShipmentStatusChanged" for e in seen),
            )
            created = [e for e in events if isinstance(e, ShipmentCreated)]
            assert sorted(e.order_id for e in created) == sorted([order_id, refunded_order_id])
            [first] = [e for e in created if e.order_id == order_id]
            assert str(first.shipment_id) == shipment["id"]
            assert first.correlation_id == paid.correlation_id
            changes = [(e.from_status, e.to_status) for e in events if isinstance(e, ShipmentStatusChanged)]
            assert changes == [("label_created", "cancelled")]

            # A cancelled shipment takes no more locations.
            token = (
                await api.post(
                    f"/shipments/{to_cancel['id']}/courier-token", headers={"Authorization": f"Bearer {OPERATOR_KEY}"}
                )
            ).json()["courier_token"]
            late = await api.post(
                f"/shipments/{to_cancel['id']}/locations",
                json=[{"lat": 48.9, "lon": 2.35, "recorded_at": datetime.now(UTC).isoformat()}],
                headers={"Authorization": f"Bearer {token}"},
            )
            assert late.status_code == 409, late.text
            assert late.json()["error"] == "shipment_closed"


async def _status_is(pending: Any, status: str) -> Any:
    shipments = await pending
    return shipments if shipments and shipments[0]["status"] == status else None


async def test_a_courier_moves_the_shipment_and_a_live_watcher_sees_it(
    tracking: Any, service_process: Any, kafka_bootstrap: str
) -> None:
    namespace = service_process.topic_namespace
    order_id = uuid.uuid4()
    async with Checkout(kafka_bootstrap, namespace) as checkout:
        await checkout.publish(order_paid(order_id))

    with httpx.Client(base_url=tracking.base_url) as sync_api:
        # The live feed reads from "latest": make sure it is reading before anything is posted.
        await eventually_async(lambda: metric(sync_api, "tweetshop_tracking_live_partitions_assigned") > 0)

    async with httpx.AsyncClient(base_url=tracking.base_url) as api:

        async def shipment_of_order() -> list[dict[str, Any]]:
            found = await api.get("/shipments", params={"order_id": str(order_id)}, headers=as_buyer(order_id))
            return list(found.json()) if found.status_code == 200 else []

        [shipment] = await eventually_async(shipment_of_order)
        shipment_id = shipment["id"]

        # The operator issues the courier token; without or with a wrong operator key, nothing.
        assert (await api.post(f"/shipments/{shipment_id}/courier-token")).status_code == 401
        wrong_operator = await api.post(
            f"/shipments/{shipment_id}/courier-token", headers={"Authorization": "Bearer not-the-key"}
        )
        assert wrong_operator.status_code == 403
        issued = await api.post(
            f"/shipments/{shipment_id}/courier-token", headers={"Authorization": f"Bearer {OPERATOR_KEY}"}
        )
        assert issued.status_code == 200, issued.text
        courier = {"Authorization": f"Bearer {issued.json()['courier_token']}"}

        now = datetime.now(UTC)
        older = {"lat": 48.9100, "lon": 2.3499, "recorded_at": (now - timedelta(seconds=40)).isoformat(), "speed": 9.5}
        newer = {"lat": 48.9000, "lon": 2.3499, "recorded_at": (now - timedelta(seconds=20)).isoformat(), "speed": 10.5}
        stale = {"lat": 48.9900, "lon": 2.3499, "recorded_at": (now - timedelta(seconds=90)).isoformat()}

        # Credentials: none → 401, another shipment's token → 403, unknown shipment → 404.
        assert (await api.post(f"/shipments/{shipment_id}/locations", json=[newer])).status_code == 401
        foreign = await api.post(
            f"/shipments/{shipment_id}/locations", json=[newer], headers={"Authorization": "Bearer tsc_someone-else"}
        )
        assert foreign.status_code == 403
        unknown = await api.post(f"/shipments/{uuid.uuid4()}/locations", json=[newer], headers=courier)
        assert unknown.status_code == 404
        # A bad point refuses the whole batch, with a clear 422.
        bad = await api.post(
            f"/shipments/{shipment_id}/locations",
            json=[newer, {**older, "recorded_at": (now + timedelta(hours=1)).isoformat()}],
            headers=courier,
        )
        assert bad.status_code == 422
        assert "future" in bad.json()["message"]

        stream = f"/shipments/{shipment_id}/stream"
        async with sse_events(tracking.base_url, stream, headers=as_buyer(order_id)) as live:
            name, snapshot = await next_event(live, lambda n, _: True)
            assert (name, snapshot["status"], snapshot["last_location"]) == ("snapshot", "label_created", None)

            posted = await api.post(f"/shipments/{shipment_id}/locations", json=[newer, older], headers=courier)
            assert posted.status_code == 200, posted.text
            body = posted.json()
            assert body["accepted"] == 2
            assert body["shipment"]["status"] == "in_transit"
            assert body["shipment"]["last_location"]["lat"] == pytest.approx(newer["lat"])
            assert body["shipment"]["eta"]["is_estimate"] is True

            # Location and status updates travel on two topics, so their order varies: wait for the
            # update that shows both the newer point and the in-transit status, whichever event carries it.
            _, update = await next_event(
                live,
                lambda n, d: (
                    n in ("location", "status")
                    and d["status"] == "in_transit"
                    and d["last_location"] is not None
                    and d["last_location"]["lat"] == pytest.approx(newer["lat"])
                ),
            )
            assert update["eta"]["remaining_m"] == pytest.approx(5226, rel=0.01)  # 0.047° of latitude

            # An out-of-order point is stored but does not move the parcel back.
            late = await api.post(f"/shipments/{shipment_id}/locations", json={"points": [stale]}, headers=courier)
            assert late.status_code == 200, late.text
            assert late.json()["accepted"] == 1

        [current] = await shipment_of_order()
        assert current["status"] == "in_transit"
        assert current["last_location"]["lat"] == pytest.approx(newer["lat"])
        assert current["eta"]["speed_source"] == "recent"

        # A retried batch stores nothing twice.
        retried = await api.post(f"/shipments/{shipment_id}/locations", json=[newer, older], headers=courier)
        assert (retried.json()["accepted"], retried.json()["duplicates"]) == (0, 2)

        # The route the map draws: every stored point, oldest first; or only the newest ones.
        route = (await api.get(f"/shipments/{shipment_id}/locations", headers=as_buyer(order_id))).json()
        assert [p["lat"] for p in route["points"]] == [stale["lat"], older["lat"], newer["lat"]]
        assert route["truncated"] is False
        newest = (
            await api.get(f"/shipments/{shipment_id}/locations", params={"limit": 2}, headers=as_buyer(order_id))
        ).json()
        assert ([p["lat"] for p in newest["points"]], newest["truncated"]) == ([older["lat"], newer["lat"]], True)

        # Operators (a courier app, the simulator) list shipments by status; nobody else can.
        operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        in_transit = await api.get("/shipments", params={"status": "in_transit"}, headers=operator)
        assert [s["id"] for s in in_transit.json()] == [shipment_id]
        assert (await api.get("/shipments", params={"status": "label_created"}, headers=operator)).json() == []
        assert (await api.get("/shipments", params={"status": "in_transit"})).status_code == 401
        no_filter = await api.get("/shipments", headers=operator)
        assert (no_filter.status_code, no_filter.json()["error"]) == (422, "missing_filter")
        assert (await api.get("/shipments", params={"status": "lost"}, headers=operator)).status_code == 422
        # The next page after the in-transit one: past its created_at and id, nothing.
        after = {"created_after": in_transit.json()[0]["created_at"], "after_id": shipment_id}
        assert (await api.get("/shipments", params={"status": "in_transit", **after}, headers=operator)).json() == []
        alone = await api.get("/shipments", params={"status": "in_transit", "after_id": shipment_id}, headers=operator)
        assert (alone.status_code, alone.json()["error"]) == (422, "after_id_alone")

    # Every stored point is on tracking.locations.v1, once, in recorded order for the shipment.
    located = await read_events(
        kafka_bootstrap,
        namespace + topics.TRACKING_LOCATIONS,
        topics.TRACKING_LOCATIONS,
        until=lambda seen: len(seen) >= 3,
    )
    assert all(isinstance(e, ShipmentLocationUpdated) for e in located)
    assert [e.lat for e in located if isinstance(e, ShipmentLocationUpdated)] == [
        older["lat"],
        newer["lat"],
        stale["lat"],
    ]
    assert {str(e.shipment_id) for e in located if isinstance(e, ShipmentLocationUpdated)} == {shipment_id}
    transitions = await read_events(
        kafka_bootstrap,
        namespace + topics.TRACKING_SHIPMENTS,
        topics.TRACKING_SHIPMENTS,
        until=lambda seen: len(seen) >= 3,
    )
    assert [(e.event_type, e.to_status if isinstance(e, ShipmentStatusChanged) else None) for e in transitions] == [
        ("ShipmentCreated", None),
        ("ShipmentStatusChanged", "picked_up"),
        ("ShipmentStatusChanged", "in_transit"),
    ]


async def test_only_the_orders_buyer_or_an_operator_can_read_its_shipment_route_stream_and_map_page(
    tracking: Any, service_process: Any, kafka_bootstrap: str
) -> None:
    namespace = service_process.topic_namespace
    order_id, other_order_id = uuid.uuid4(), uuid.uuid4()
    async with Checkout(kafka_bootstrap, namespace) as checkout:
        await checkout.publish(order_paid(order_id))
        await checkout.publish(order_paid(other_order_id))

    async with httpx.AsyncClient(base_url=tracking.base_url) as api:

        async def shipment_of(order: uuid.UUID) -> list[dict[str, Any]]:
            found = await api.get("/shipments", params={"order_id": str(order)}, headers=as_buyer(order))
            return list(found.json()) if found.status_code == 200 else []

        [shipment] = await eventually_async(lambda: shipment_of(order_id))
        await eventually_async(lambda: shipment_of(other_order_id))
        sid = shipment["id"]
        readers = {
            "list": ("/shipments", {"order_id": str(order_id)}),
            "one": (f"/shipments/{sid}", {}),
            "route": (f"/shipments/{sid}/locations", {}),
            "stream": (f"/shipments/{sid}/stream", {}),
            "map page": (f"/track/{order_id}", {}),
        }
        operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        for name, (path, params) in readers.items():
            nobody = await api.get(path, params=params)
            assert nobody.status_code == 401, (name, nobody.text)
            wrong = await api.get(path, params=params, headers={"Authorization": "Bearer tso_guessed"})
            assert (wrong.status_code, wrong.json()["error"]) == (404, "unknown_shipment"), name
            # Another buyer's genuine token opens their own order only.
            someone_else = await api.get(path, params=params, headers=as_buyer(other_order_id))
            assert someone_else.status_code == 404, name
            in_query = await api.get(path, params={**params, "token": "tso_guessed"})
            assert in_query.status_code == 404, name
            if name == "stream":
                for headers, query in ((as_buyer(order_id), {}), ({}, {"access_token": buyer_token(order_id)})):
                    async with sse_events(tracking.base_url, path + "?" + urlencode(query), headers) as live:
                        event, _ = await asyncio.wait_for(live.get(), 10)
                        assert event == "snapshot"
                continue
            for headers, query in (
                (as_buyer(order_id), {}),
                ({}, {"token": buyer_token(order_id)}),  # the tracking_url checkout hands out
                ({}, {"access_token": buyer_token(order_id)}),  # what the map page's script sends
                (operator, {}),
            ):
                allowed = await api.get(path, params={**params, **query}, headers=headers)
                assert allowed.status_code == 200, (name, query, allowed.text)
        # An order whose OrderPaid carried no verifier (an older checkout): operators only.
        legacy = uuid.uuid4()
        async with Checkout(kafka_bootstrap, namespace) as checkout:
            await checkout.publish(order_paid(legacy).model_copy(update={"buyer_access_sha256": None}))
        listed = await eventually_async(
            lambda: _json_if_ok(api.get("/shipments", params={"order_id": str(legacy)}, headers=operator))
        )
        assert listed[0]["order_id"] == str(legacy)
        refused = await api.get("/shipments", params={"order_id": str(legacy)}, headers=as_buyer(legacy))
        assert refused.status_code == 404


async def test_a_deleted_buyers_delivery_point_and_courier_track_are_erased(
    tracking: Any, service_process: Any, kafka_bootstrap: str
) -> None:
    # checkout publishes OrderBuyerErased for each order of a deleted buyer: the shipment stays (status, city) for
    # the merchant's records; the door (the point to 1 decimal), the track, the buyer's access and the courier go.
    namespace = service_process.topic_namespace
    order_id, kept_id = uuid.uuid4(), uuid.uuid4()
    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    async with Checkout(kafka_bootstrap, namespace) as checkout:
        await checkout.publish(order_paid(order_id))
        await checkout.publish(order_paid(kept_id))
    async with httpx.AsyncClient(base_url=tracking.base_url) as api:

        async def shipment_of(order: uuid.UUID) -> list[dict[str, Any]]:
            found = await api.get("/shipments", params={"order_id": str(order)}, headers=as_buyer(order))
            return list(found.json()) if found.status_code == 200 else []

        [shipment] = await eventually_async(lambda: shipment_of(order_id))
        [kept] = await eventually_async(lambda: shipment_of(kept_id))
        points = [{"lat": 48.9531, "lon": 2.3498, "recorded_at": datetime.now(UTC).isoformat(), "speed": 3.0}]
        couriers = {}
        for sid in (shipment["id"], kept["id"]):
            issued = await api.post(f"/shipments/{sid}/courier-token", headers=operator)
            couriers[sid] = {"Authorization": f"Bearer {issued.json()['courier_token']}"}
            posted = await api.post(f"/shipments/{sid}/locations", json=points, headers=couriers[sid])
            assert posted.status_code == 200, posted.text

        before = (await api.get(f"/shipments/{shipment['id']}", headers=operator)).json()
        assert before["last_location"] is not None
        async with Checkout(kafka_bootstrap, namespace) as checkout:
            erasure = OrderBuyerErased(
                producer="checkout",
                correlation_id=f"erase-{order_id}",
                order_id=order_id,
                product_id=uuid.uuid4(),
                quantity=1,
            )
            await checkout.publish(erasure)
            await checkout.publish(erasure)  # a replay erases nothing more and fails nothing

        async def erased() -> dict[str, Any] | None:
            one = (await api.get(f"/shipments/{shipment['id']}", headers=operator)).json()
            return dict(one) if one["last_location"] is None else None

        after = await eventually_async(erased)
        assert (after["destination"]["lat"], after["destination"]["lon"]) == (48.9, 2.3)
        assert after["destination"]["city"] == "Paris" and after["status"] == before["status"]
        route = (await api.get(f"/shipments/{shipment['id']}/locations", headers=operator)).json()
        assert route["points"] == []
        # Nobody opens it with the order's access token any more, and its courier token is dead.
        assert (await api.get(f"/shipments/{shipment['id']}", headers=as_buyer(order_id))).status_code == 404
        late = await api.post(f"/shipments/{shipment['id']}/locations", json=points, headers=couriers[shipment["id"]])
        assert late.status_code == 403
        # Another order's shipment is untouched.
        other = (await api.get(f"/shipments/{kept['id']}", headers=as_buyer(kept_id))).json()
        assert other["last_location"] is not None and other["destination"]["lat"] == PARIS.lat
        other_route = (await api.get(f"/shipments/{kept['id']}/locations", headers=as_buyer(kept_id))).json()
        assert len(other_route["points"]) == 1


async def _json_if_ok(pending: Any) -> Any:
    response = await pending
    return response.json() if response.status_code == 200 else None
