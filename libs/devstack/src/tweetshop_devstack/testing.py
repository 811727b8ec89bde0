"""The one test harness, for tests and benchmarks alike: wait for a condition, make and drop a database, read a topic.

- ``eventually`` / ``eventually_async``: poll ``check`` until it answers something truthy (a value, or True),
  and return it; past ``timeout``, AssertionError naming ``what`` and the last answer. The services learn
  from each other by events, so what one did shows in another a moment later.
- ``create_database`` / ``drop_database``: a scratch database on a server, by its superuser DSN; ``fetch``: the
  rows of one statement on a connection of its own.
- ``read_topic`` / ``read_events`` / ``events_of`` (from ``kafka_probe``): every record (or decoded event) of a
  topic from the beginning.
- ``order_paid``: the event that makes tracking ship an order; ``order_placed``: a plain order of one unit;
  ``metric_value``: one sample of a ``/metrics`` text; ``csp_directives``: a Content-Security-Policy, parsed.
- ``run_sync``: a coroutine run to completion from sync code, even inside a running event loop.

Services under test run as processes through the pytest plugin's ``service_process`` / ``scratch_processes``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tweetshop_contracts import Destination, OrderPaid, OrderPlaced

from .kafka_probe import Record, events_of, read_events, read_topic

__all__ = [
    "Record",
    "create_database",
    "csp_directives",
    "drop_database",
    "dsn_with_database",
    "events_of",
    "eventually",
    "eventually_async",
    "fetch",
    "metric_value",
    "order_paid",
    "order_placed",
    "read_events",
    "read_topic",
    "run_sync",
]

T = TypeVar("T")


def _timed_out(what: str, last: Any, timeout: float) -> AssertionError:
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}; last seen: {last!r}")


def eventually(
    check: Callable[[], T | None], *, timeout: float = 45.0, interval: float = 0.2, what: str = "condition"
) -> T:
    """The first truthy result of ``check()``, polled every ``interval`` seconds (once more at the deadline);
    AssertionError with ``what`` and the last result after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise _timed_out(what, last, timeout)
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], Awaitable[T | None] | T | None],
    *,
    timeout: float = 20.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """``eventually`` for async code: ``check`` may be sync or async; the loop keeps running while it waits."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise _timed_out(what, last, timeout)
        await asyncio.sleep(interval)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even while an event loop runs in this thread."""
    # A worker thread has no loop of its own: asyncio.run there never touches pytest-asyncio's session loop.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="devstack-sync") as pool:
        return pool.submit(asyncio.run, coro).result()


def dsn_with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def create_database(admin_dsn: str, name: str) -> None:
    """``CREATE DATABASE name`` through a superuser DSN (to any database of the server)."""
    import asyncpg

    conn = await asyncpg.connect(dsn_with_database(admin_dsn, "postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    """``DROP DATABASE IF EXISTS name``, ending every connection to it first (one a test forgot to close
    would make the drop wait or fail)."""
    import asyncpg

    conn = await asyncpg.connect(dsn_with_database(admin_dsn, "postgres"))
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def order_paid(
    order_id: uuid.UUID,
    *,
    destination: Destination,
    amount_minor: int = 2500,
    buyer_access_sha256: str | None = None,
    producer: str = "checkout",
    correlation_id: str | None = None,
    payment_intent_id: str | None = None,
) -> OrderPaid:
    """An ``OrderPaid`` for one unit of a fresh product, as checkout publishes it: what tracking ships."""
    return OrderPaid(
        producer=producer,
        correlation_id=correlation_id or f"corr-{order_id}",
        order_id=order_id,
        product_id=uuid.uuid4(),
        quantity=1,
        amount_minor=amount_minor,
        currency="EUR",
        payment_intent_id=payment_intent_id or f"pi_{order_id.hex[:12]}",
        destination=destination,
        buyer_access_sha256=buyer_access_sha256,
    )


def order_placed(*, event_id: uuid.UUID | None = None, correlation_id: str = "corr") -> OrderPlaced:
    """An ``OrderPlaced`` of one unit at 1.00 EUR, for a fresh order, product and tweet (a fresh event id unless
    ``event_id``)."""
    return OrderPlaced(
        event_id=event_id or uuid.uuid4(),
        producer="test",
        correlation_id=correlation_id,
        order_id=uuid.uuid4(),
        product_id=uuid.uuid4(),
        quantity=1,
        tweet_id=uuid.uuid4(),
        buyer_id="b",
        amount_minor=100,
        currency="EUR",
        unit_price_minor=100,
    )


async def fetch(dsn: str, query: str, *args: Any) -> list[Any]:
    """The rows of one statement, on a connection of its own (opened and closed here): asyncpg Records."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus ``/metrics`` text (0 when absent): the one without labels, or with ``labels``
    the first whose labels include them."""
    if not labels:
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def csp_directives(csp: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header's directives: ``{"script-src": ["'self'"], …}``."""
    parsed: dict[str, list[str]] = {}
    for part in csp.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed
