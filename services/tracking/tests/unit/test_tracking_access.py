"""Who may read and write what in tracking (``tracking.access``), decided without a database.

The buyer's and the courier's checks are the database's (fakes here, recording what they were asked); every
other rule is the access module's own: where a token may ride, the operator key only as a header, 401/403/404.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr
from starlette.requests import Request
from tracking.access import TrackingAccess
from tracking.domain import Destination, Shipment
from tweetshop_platform.errors import Forbidden, NotFound, Unauthorized

OPERATOR_KEY = "unit-test-operator-key"
BUYER_TOKEN = "tso_buyer"
COURIER_TOKEN = "tsc_courier"
ORDER = uuid.UUID(int=7)
SHIPMENT = uuid.UUID(int=8)


class Checks:
    """The database's answers: the buyer's token reads ORDER, the courier's token posts to SHIPMENT."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, uuid.UUID, str]] = []

    async def buyer(self, order_id: uuid.UUID, token: str) -> None:
        self.asked.append(("buyer", order_id, token))
        if (order_id, token) != (ORDER, BUYER_TOKEN):
            raise NotFound("no shipment of this order can be read with this token", code="unknown_shipment")

    async def courier(self, shipment_id: uuid.UUID, token: str) -> None:
        self.asked.append(("courier", shipment_id, token))
        if shipment_id != SHIPMENT:
            raise NotFound("unknown shipment", code="unknown_shipment")
        if token != COURIER_TOKEN:
            raise Forbidden("this token is not the courier token of this shipment")


@pytest.fixture
def checks() -> Checks:
    return Checks()


@pytest.fixture
def access(checks: Checks) -> TrackingAccess:
    return TrackingAccess(SecretStr(OPERATOR_KEY), buyer=checks.buyer, courier=checks.courier)


def request(bearer: str | None = None, **query: str) -> Request:
    headers = [(b"authorization", f"Bearer {bearer}".encode())] if bearer is not None else []
    return Request(
        {"type": "http", "method": "GET", "path": "/", "query_string": urlencode(query).encode(), "headers": headers}
    )


def a_shipment(order_id: uuid.UUID = ORDER) -> Shipment:
    return Shipment(
        id=SHIPMENT,
        order_id=order_id,
        status="in_transit",
        destination=Destination("Paris", "FR", 48.85, 2.35),
        correlation_id="c",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


# --- the operator key never rides in a URL -------------------------------------------------


@pytest.mark.parametrize("name", ["token", "access_token"])
@pytest.mark.parametrize("bearer", [None, OPERATOR_KEY])
def test_the_operator_key_in_a_url_is_refused_even_alongside_the_header(
    access: TrackingAccess, name: str, bearer: str | None
) -> None:
    with pytest.raises(Forbidden) as refused:
        access.refuse_operator_key_in_url(request(bearer, **{name: f" {OPERATOR_KEY} "}))
    assert refused.value.code == "operator_key_in_url"
    assert "Authorization: Bearer" in str(refused.value) and OPERATOR_KEY not in str(refused.value)


def test_a_buyers_token_in_a_url_and_no_token_at_all_pass_the_url_check(access: TrackingAccess) -> None:
    access.refuse_operator_key_in_url(request(token=BUYER_TOKEN))
    access.refuse_operator_key_in_url(request())


# --- where a token is read from -------------------------------------------------------------


def test_the_header_wins_over_the_query(access: TrackingAccess) -> None:
    assert access.presented_token(request("from-header", token="from-query")) == "from-header"


@pytest.mark.parametrize(
    ("query", "token"),
    [({"access_token": "a", "token": "b"}, "a"), ({"token": " b "}, "b"), ({"access_token": " ", "token": "b"}, "b")],
)
def test_without_a_header_the_token_rides_in_the_query(
    access: TrackingAccess, query: dict[str, str], token: str
) -> None:
    assert access.presented_token(request(**query)) == token


def test_no_token_anywhere_is_401(access: TrackingAccess) -> None:
    with pytest.raises(Unauthorized):
        access.presented_token(request(other="x"))


def test_reading_a_token_refuses_the_operator_key_in_the_url_too(access: TrackingAccess) -> None:
    with pytest.raises(Forbidden):
        access.presented_token(request(OPERATOR_KEY, token=OPERATOR_KEY))


# --- readers: the order's buyer or an operator ----------------------------------------------


async def test_the_operator_key_as_a_header_reads_any_order_without_asking_the_database(
    access: TrackingAccess, checks: Checks
) -> None:
    await access.authorize_order_reader(request(OPERATOR_KEY), uuid.uuid4())
    assert checks.asked == []


@pytest.mark.parametrize("how", ["header", "token", "access_token"])
async def test_the_buyer_reads_their_order_with_its_token(access: TrackingAccess, checks: Checks, how: str) -> None:
    sent = request(BUYER_TOKEN) if how == "header" else request(**{how: BUYER_TOKEN})
    await access.authorize_order_reader(sent, ORDER)
    assert checks.asked == [("buyer", ORDER, BUYER_TOKEN)]


async def test_any_other_token_is_404_never_403(access: TrackingAccess) -> None:
    with pytest.raises(NotFound) as not_found:
        await access.authorize_order_reader(request("someone-else"), ORDER)
    assert (not_found.value.status, not_found.value.code) == (404, "unknown_shipment")
    with pytest.raises(NotFound):
        await access.authorize_order_reader(request(BUYER_TOKEN), uuid.uuid4())  # the buyer's token, another order


async def test_a_shipment_is_read_with_its_orders_token(access: TrackingAccess, checks: Checks) -> None:
    await access.authorize_shipment_reader(request(token=BUYER_TOKEN), a_shipment())
    assert checks.asked == [("buyer", ORDER, BUYER_TOKEN)]
    with pytest.raises(NotFound):
        await access.authorize_shipment_reader(request(token=BUYER_TOKEN), a_shipment(order_id=uuid.uuid4()))


async def test_a_reader_without_a_token_is_401(access: TrackingAccess, checks: Checks) -> None:
    with pytest.raises(Unauthorized):
        await access.authorize_order_reader(request(), ORDER)
    assert checks.asked == []


# --- operators only ---------------------------------------------------------------------------


def test_operator_routes_take_the_operator_key_as_a_header_only(access: TrackingAccess) -> None:
    access.operator(request(OPERATOR_KEY))
    with pytest.raises(Unauthorized):
        access.operator(request(token=OPERATOR_KEY))  # in the query it is no credential here (and 403 before)
    with pytest.raises(Forbidden):
        access.operator(request(BUYER_TOKEN))


# --- couriers: one shipment's token, as a header ------------------------------------------------


async def test_a_courier_posts_with_the_shipments_token(access: TrackingAccess, checks: Checks) -> None:
    assert await access.courier_token(SHIPMENT, request(COURIER_TOKEN)) == COURIER_TOKEN
    assert checks.asked == [("courier", SHIPMENT, COURIER_TOKEN)]


async def test_a_courier_token_is_a_header_only_and_checked_by_shipment(access: TrackingAccess) -> None:
    with pytest.raises(Unauthorized):
        await access.courier_token(SHIPMENT, request(token=COURIER_TOKEN))
    with pytest.raises(Forbidden):
        await access.courier_token(SHIPMENT, request(BUYER_TOKEN))
    with pytest.raises(NotFound):
        await access.courier_token(uuid.uuid4(), request(COURIER_TOKEN))


async def test_the_operator_key_is_no_courier_token(access: TrackingAccess) -> None:
    with pytest.raises(Forbidden):
        await access.courier_token(SHIPMENT, request(OPERATOR_KEY))
