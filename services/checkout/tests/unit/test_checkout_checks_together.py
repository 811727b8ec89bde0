"""A drop's refusals of one product are read together (refusals.ChecksTogether): one statement for the purchases
that wait at once, never a read that began before a purchase arrived, each purchase its own answer, a failed read
failing only its own purchases. ``orders.check_purchases`` is played by the test (its SQL is tested against the real
database in test_checkout_limits.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from checkout import refusals
from checkout.api import OrderIn
from checkout.config import CheckoutSettings
from checkout.domain import PurchaseRequest
from checkout.usecases import orders
from tweetshop_devstack.seed import order_body
from tweetshop_platform.errors import Conflict, DomainError

SETTINGS = CheckoutSettings(log_format="console", database_url="postgresql://nobody@127.0.0.1:1/none")
TWEET = uuid.uuid4()


class _Pool:
    """Hands out a connection: the statement is the played ``check_purchases``."""

    def __init__(self) -> None:
        self.taken = 0

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[object]:
        self.taken += 1
        yield object()


class _Database:
    """``orders.check_purchases`` played: records each statement's purchases, answers each by its key, and can hold
    a statement until released or fail the next one."""

    def __init__(self) -> None:
        self.statements: list[list[str]] = []
        self.hold: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.fail_next: Exception | None = None

    async def check_purchases(
        self, _conn: object, _settings: CheckoutSettings, purchases: Sequence[tuple[PurchaseRequest, str]], **_: Any
    ) -> list[orders.Checked | DomainError]:
        self.statements.append([key for _, key in purchases])
        self.started.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure
        return [Conflict(f"sold out for {key}", code="insufficient_stock") for _, key in purchases]


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> _Database:
    played = _Database()
    monkeypatch.setattr(orders, "check_purchases", played.check_purchases)
    return played


def purchase(product: uuid.UUID) -> PurchaseRequest:
    return OrderIn.model_validate(order_body(TWEET, product)).to_request()


async def held_read(
    database: _Database, checks: refusals.ChecksTogether, product: uuid.UUID, *keys: str
) -> list[asyncio.Task[orders.Checked | DomainError]]:
    """Purchases whose read has begun and is held by the database until ``database.hold`` is set."""
    database.hold = asyncio.Event()
    reading = [asyncio.create_task(checks.check(purchase(product), key)) for key in keys]
    await database.started.wait()  # the read has begun: what comes now was not there when it began
    return reading


def said(answer: orders.Checked | DomainError) -> str:
    assert isinstance(answer, DomainError)
    return answer.message


async def test_purchases_waiting_at_once_are_read_in_one_statement_each_with_its_own_answer(
    database: _Database,
) -> None:
    pool = _Pool()
    checks = refusals.ChecksTogether(lambda: pool, SETTINGS)
    product = uuid.uuid4()
    answers = await asyncio.gather(*(checks.check(purchase(product), f"k{i}") for i in range(5)))
    assert [said(a) for a in answers] == [f"sold out for k{i}" for i in range(5)]
    assert database.statements == [[f"k{i}" for i in range(5)]]
    assert pool.taken == 1


async def test_a_purchase_that_comes_during_a_read_waits_for_the_next_one(database: _Database) -> None:
    checks = refusals.ChecksTogether(lambda: _Pool(), SETTINGS)
    product = uuid.uuid4()
    (first,) = await held_read(database, checks, product, "early")
    later = [asyncio.create_task(checks.check(purchase(product), f"late{i}")) for i in range(3)]
    await asyncio.sleep(0)
    assert database.statements == [["early"]]
    database.hold.set()
    assert said(await first) == "sold out for early"
    assert [said(a) for a in await asyncio.gather(*later)] == [f"sold out for late{i}" for i in range(3)]
    assert database.statements == [["early"], ["late0", "late1", "late2"]]


async def test_products_are_read_apart(database: _Database) -> None:
    checks = refusals.ChecksTogether(lambda: _Pool(), SETTINGS)
    a, b = uuid.uuid4(), uuid.uuid4()
    await asyncio.gather(
        checks.check(purchase(a), "a1"), checks.check(purchase(b), "b1"), checks.check(purchase(a), "a2")
    )
    assert sorted(database.statements) == [["a1", "a2"], ["b1"]]


async def test_at_most_so_many_in_one_statement(database: _Database) -> None:
    checks = refusals.ChecksTogether(lambda: _Pool(), SETTINGS, most=2)
    product = uuid.uuid4()
    answers = await asyncio.gather(*(checks.check(purchase(product), f"k{i}") for i in range(5)))
    assert [said(a) for a in answers] == [f"sold out for k{i}" for i in range(5)]
    assert database.statements == [["k0", "k1"], ["k2", "k3"], ["k4"]]


async def test_a_failed_read_fails_its_own_purchases_and_the_next_read_goes_on(database: _Database) -> None:
    checks = refusals.ChecksTogether(lambda: _Pool(), SETTINGS)
    product = uuid.uuid4()
    database.fail_next = OSError("connection lost")
    first = await held_read(database, checks, product, "k0", "k1")
    later = asyncio.create_task(checks.check(purchase(product), "after"))
    await asyncio.sleep(0)
    database.hold.set()
    for task in first:
        with pytest.raises(OSError, match="connection lost"):
            await task
    assert said(await later) == "sold out for after"


async def test_a_purchase_whose_client_went_away_is_not_read_for(database: _Database) -> None:
    checks = refusals.ChecksTogether(lambda: _Pool(), SETTINGS)
    product = uuid.uuid4()
    (first,) = await held_read(database, checks, product, "first")
    gone = asyncio.create_task(checks.check(purchase(product), "gone"))
    stays = asyncio.create_task(checks.check(purchase(product), "stays"))
    await asyncio.sleep(0)
    gone.cancel()
    database.hold.set()
    await first
    assert said(await stays) == "sold out for stays"
    assert database.statements == [["first"], ["stays"]]


async def test_a_reader_cancelled_at_shutdown_leaves_no_purchase_waiting(database: _Database) -> None:
    checks = refusals.ChecksTogether(lambda: _Pool(), SETTINGS)
    product = uuid.uuid4()
    (reading,) = await held_read(database, checks, product, "reading")
    queued = asyncio.create_task(checks.check(purchase(product), "queued"))
    await asyncio.sleep(0)
    for task in asyncio.all_tasks():
        if task.get_name().startswith("sold-out-checks-"):
            task.cancel()
    for task in (reading, queued):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 1)
    # The next purchase of the product starts a read of its own.
    database.hold = None
    assert said(await checks.check(purchase(product), "next")) == "sold out for next"
