"""The reconciliation checker: after a run (chaos or not), do orders, money, stock and events all add up?

It reads every service's schema in the test database (as the superuser), the
topics of the run's namespace and the Stripe server, and lists every broken
invariant in plain words:

- every order reached exactly one terminal status, and exactly one terminal event says so;
- one PaymentIntent at most per order: exactly one succeeded for a paid order, none for any other;
- stock is conserved per product: initial = available + reserved + sold, nothing negative,
  nothing left reserved, and sold = the units of the paid orders;
- every outbox row reached its topic; every consumer applied every event of its topics
  exactly once (its inbox), nothing was parked on a dead-letter topic; one reservation per
  order in catalog, one shipment per paid order in tracking, stock released at most once.

    report = await reconcile(database_dsn=..., kafka_bootstrap=..., topic_namespace=..., stripe_base_url=...,
                             initial_stock={product_id: 10}, accepted_orders=order_ids)
    report.raise_if_violated()

``settle_problems`` answers whether the system has come to rest yet (poll it before reconciling).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer
from tweetshop_contracts import topics
from tweetshop_contracts.system import SYSTEM
from tweetshop_contracts.topics import dlq_topic
from tweetshop_platform.lag import group_consumer, measure

from .kafka_probe import read_topic
from .services import DEV_STRIPE_API_KEY

# The schemas to look in and the topics to read: every declared service with a database, every declared topic.
SERVICES: tuple[str, ...] = tuple(s.name for s in SYSTEM.with_database())
TERMINAL = frozenset({"paid", "failed", "cancelled", "refunded"})
# The event that ends an order, by the order's final status (a refunded order was paid first).
TERMINAL_EVENT = {
    "paid": "OrderPaid",
    "refunded": "OrderPaid",
    "failed": "OrderPaymentFailed",
    "cancelled": "OrderCancelled",
}
TOPICS: tuple[str, ...] = SYSTEM.topic_names()


@dataclass(frozen=True)
class TopicEvent:
    """One message as read from a topic: enough of its JSON to reconcile."""

    topic: str
    event_id: str
    event_type: str
    order_id: str | None


@dataclass
class Report:
    """What the checker found: broken invariants (empty when all is well) and the facts it counted."""

    violations: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def violated(self, message: str) -> None:
        self.violations.append(message)

    def raise_if_violated(self) -> None:
        """AssertionError listing every broken invariant (at most 50 shown)."""
        if self.violations:
            shown = "\n  - ".join(self.violations[:50])
            more = f"\n  ... and {len(self.violations) - 50} more" if len(self.violations) > 50 else ""
            raise AssertionError(f"{len(self.violations)} invariant(s) broken:\n  - {shown}{more}\nfacts: {self.facts}")


# --- reading ------------------------------------------------------------------------------------------------------


async def _fetch(conn: asyncpg.Connection, query: str, *args: Any) -> list[asyncpg.Record]:
    return list(await conn.fetch(query, *args))


async def _schemas(conn: asyncpg.Connection) -> set[str]:
    rows = await _fetch(conn, "SELECT schema_name FROM information_schema.schemata")
    return {r["schema_name"] for r in rows} & set(SERVICES)


def _event_of(topic: str, value: bytes) -> TopicEvent | None:
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(raw, dict) or "event_id" not in raw:
        return None
    order_id = raw.get("order_id")
    return TopicEvent(topic, str(raw["event_id"]), str(raw.get("event_type", "")), str(order_id) if order_id else None)


async def existing_topics(kafka_bootstrap: str) -> set[str]:
    """Names of the topics the broker has."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


async def read_events(
    kafka_bootstrap: str, namespace: str, logical_topics: Iterable[str]
) -> dict[str, list[TopicEvent]]:
    """Every message on each topic of the namespace, from the start (duplicates included), by logical topic.

    A topic the broker does not have (no one ever published or subscribed to it) has no messages.
    """
    present = await existing_topics(kafka_bootstrap)
    found: dict[str, list[TopicEvent]] = {}
    for topic in logical_topics:
        records = (
            await read_topic(kafka_bootstrap, namespace + topic, timeout=30) if namespace + topic in present else []
        )
        found[topic] = [e for r in records if (e := _event_of(topic, r.value)) is not None]
    return found


async def stripe_intents_by_order(stripe_base_url: str, api_key: str = DEV_STRIPE_API_KEY) -> dict[str, list[Any]]:
    """Every PaymentIntent the Stripe server holds, grouped by ``metadata.order_id`` (paging through all)."""
    by_order: dict[str, list[Any]] = defaultdict(list)
    params: dict[str, Any] = {"limit": 100}
    async with httpx.AsyncClient(base_url=stripe_base_url, auth=(api_key, ""), timeout=30) as http:
        while True:
            response = await http.get("/v1/payment_intents", params=params)
            response.raise_for_status()
            page = response.json()
            for intent in page["data"]:
                order_id = (intent.get("metadata") or {}).get("order_id")
                if order_id:
                    by_order[str(order_id)].append(intent)
            if not page.get("has_more") or not page["data"]:
                return by_order
            params["starting_after"] = page["data"][-1]["id"]


# --- settling -----------------------------------------------------------------------------------------------------


async def consumer_lag(kafka_bootstrap: str, topics_of: Mapping[str, Iterable[str]]) -> dict[tuple[str, str], int]:
    """Messages each consumer group has not committed yet, by (group, physical topic)."""
    lag: dict[tuple[str, str], int] = defaultdict(int)
    for group, group_topics in topics_of.items():
        consumer = group_consumer(kafka_bootstrap, group)
        await consumer.start()
        try:
            for row in await measure(consumer, group, sorted(group_topics)):
                lag[(group, row.topic)] += row.lag
        finally:
            await consumer.stop()
    return dict(lag)


async def settle_problems(
    database_dsn: str,
    accepted_orders: Collection[uuid.UUID] = (),
    *,
    kafka_bootstrap: str | None = None,
    topic_namespace: str = "",
) -> list[str]:
    """Why the system is not at rest yet (empty list: it is).

    Open orders, reserved stock, unpublished outbox rows and, given the broker, consumer
    groups (those that applied at least one event) with messages not committed yet.
    """
    problems: list[str] = []
    conn = await asyncpg.connect(database_dsn)
    try:
        schemas = await _schemas(conn)
        if "checkout" in schemas:
            rows = await _fetch(conn, "SELECT id, status FROM checkout.orders")
            statuses = {r["id"]: r["status"] for r in rows}
            open_orders = [i for i, s in statuses.items() if s not in TERMINAL]
            unknown = [i for i in accepted_orders if i not in statuses]
            if open_orders:
                problems.append(f"{len(open_orders)} order(s) not ended yet")
            if unknown:
                problems.append(f"{len(unknown)} accepted order(s) not in checkout's database")
        if "catalog" in schemas:
            reserved = await conn.fetchval("SELECT coalesce(sum(stock_reserved), 0) FROM catalog.products")
            if reserved:
                problems.append(f"{reserved} unit(s) still reserved in catalog")
        topics_of: dict[str, set[str]] = defaultdict(set)
        for schema in schemas:
            unpublished = await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL")
            if unpublished:
                problems.append(f"{unpublished} {schema} outbox row(s) not published yet")
            for row in await _fetch(conn, f"SELECT DISTINCT consumer, topic FROM {schema}.inbox"):
                topics_of[row["consumer"]].add(topic_namespace + row["topic"])
    finally:
        await conn.close()
    if kafka_bootstrap is not None:
        for (group, topic), behind in sorted((await consumer_lag(kafka_bootstrap, topics_of)).items()):
            if behind:
                problems.append(f"{group} is {behind} message(s) behind on {topic}")
    return problems


# --- the checks ---------------------------------------------------------------------------------------------------


def _check_orders(
    report: Report,
    orders: Mapping[str, asyncpg.Record],
    accepted: set[str],
    order_events: list[TopicEvent],
) -> None:
    for order_id in sorted(accepted - set(orders)):
        report.violated(f"order {order_id} was accepted (202/200) but checkout has no such order")
    statuses = Counter(r["status"] for r in orders.values())
    report.facts["orders_by_status"] = dict(sorted(statuses.items()))
    distinct: dict[str, dict[str, str]] = defaultdict(dict)  # order id → event id → type
    for e in order_events:
        if e.order_id is not None:
            distinct[e.order_id][e.event_id] = e.event_type
    for order_id, row in orders.items():
        status = row["status"]
        if status not in TERMINAL:
            report.violated(f"order {order_id} never ended: still {status}")
            continue
        types = Counter(distinct[order_id].values())
        if types["OrderPlaced"] != 1:
            report.violated(f"order {order_id}: {types['OrderPlaced']} OrderPlaced events (expected 1)")
        ends = {t: n for t, n in types.items() if t in ("OrderPaid", "OrderPaymentFailed", "OrderCancelled")}
        if ends != {TERMINAL_EVENT[status]: 1}:
            report.violated(f"order {order_id} is {status} but its terminal events are {ends or 'none'}")


def _check_payments(report: Report, orders: Mapping[str, asyncpg.Record], intents: Mapping[str, list[Any]]) -> None:
    succeeded_total = 0
    for order_id, row in orders.items():
        mine = intents.get(order_id, [])
        succeeded = [pi for pi in mine if pi.get("status") == "succeeded"]
        succeeded_total += len(succeeded)
        if len(mine) > 1:
            report.violated(f"order {order_id} has {len(mine)} PaymentIntents (one per order at most)")
        if row["status"] in ("paid", "refunded"):
            if len(succeeded) != 1:
                report.violated(f"paid order {order_id} has {len(succeeded)} succeeded PaymentIntents (expected 1)")
            elif succeeded[0]["id"] != row["payment_intent_id"]:
                report.violated(
                    f"paid order {order_id} records {row['payment_intent_id']} but {succeeded[0]['id']} was charged"
                )
        elif succeeded:
            report.violated(f"order {order_id} is {row['status']} but was charged: {[pi['id'] for pi in succeeded]}")
    report.facts["payment_intents_succeeded"] = succeeded_total
    report.facts["payment_intents"] = sum(len(intents.get(o, [])) for o in orders)


def _check_stock(
    report: Report,
    initial_stock: Mapping[uuid.UUID, int],
    products: Mapping[uuid.UUID, asyncpg.Record],
    orders: Mapping[str, asyncpg.Record],
    reservations: list[asyncpg.Record],
) -> None:
    sold_by_orders: Counter[uuid.UUID] = Counter()
    for row in orders.values():
        # A full refund brings the goods back (restock); a paid order keeps them sold.
        if row["status"] == "paid":
            sold_by_orders[row["product_id"]] += row["quantity"]
    for product_id, initial in initial_stock.items():
        p = products.get(product_id)
        if p is None:
            report.violated(f"product {product_id} is not in catalog")
            continue
        available, reserved, sold = p["stock_available"], p["stock_reserved"], p["stock_sold"]
        if min(available, reserved, sold) < 0:
            report.violated(f"product {product_id}: negative stock {available=} {reserved=} {sold=}")
        if available + reserved + sold != initial:
            report.violated(
                f"product {product_id}: stock not conserved: {initial} ≠ {available} available + {reserved} "
                f"reserved + {sold} sold"
            )
        if reserved != 0:
            report.violated(f"product {product_id}: {reserved} unit(s) still reserved at rest")
        if sold != sold_by_orders[product_id]:
            report.violated(
                f"product {product_id}: {sold} sold in catalog, paid orders hold {sold_by_orders[product_id]}"
            )
    by_order = Counter(str(r["order_id"]) for r in reservations)
    for order_id, n in by_order.items():
        if n != 1:
            report.violated(f"order {order_id} has {n} reservations in catalog")
    committed = {str(r["order_id"]) for r in reservations if r["status"] == "committed"}
    paid = {o for o, r in orders.items() if r["status"] == "paid"}
    for order_id in sorted(paid ^ committed):
        report.violated(
            f"order {order_id}: paid in checkout = {order_id in paid}, sold in catalog = {order_id in committed}"
        )
    report.facts["units_sold"] = sum(sold_by_orders.values())


def _check_allocations(report: Report, allocations: Iterable[asyncpg.Record]) -> None:
    """At rest, every unit catalog allocated to checkout is accounted for: what catalog counts as allocated is what
    checkout has left of the same generation, and nothing of a taken-back generation is still out (each unit was
    reserved by an order or given back, once)."""
    for a in allocations:
        product = a["id"]
        if a["stock_returning"]:
            report.violated(f"product {product}: {a['stock_returning']} unit(s) of a taken-back allocation unaccounted")
        same_generation = a["checkout_generation"] == a["allocation_generation"]
        left = (a["units_left"] or 0) if same_generation else 0
        if a["stock_allocated"] != left:
            report.violated(
                f"product {product}: catalog counts {a['stock_allocated']} unit(s) allocated to checkout (generation "
                f"{a['allocation_generation']}), checkout has {a['units_left']} (generation {a['checkout_generation']})"
            )


def _check_delivery(
    report: Report,
    outbox: Mapping[str, list[asyncpg.Record]],
    inbox: list[asyncpg.Record],
    events: Mapping[str, list[TopicEvent]],
    dead_letters: Mapping[str, list[TopicEvent]],
    acts_on: Mapping[tuple[str, str], tuple[str, ...]] | None = None,
) -> None:
    on_topic = {topic: {e.event_id for e in found} for topic, found in events.items()}
    for schema, rows in outbox.items():
        for row in rows:
            if row["published_at"] is None:
                report.violated(f"{schema} outbox event {row['event_id']} ({row['event_type']}) never published")
            if str(row["event_id"]) not in on_topic.get(row["topic"], set()):
                report.violated(
                    f"{schema} outbox event {row['event_id']} ({row['event_type']}) is not on {row['topic']}"
                )
    redelivered = {topic: len(found) - len({e.event_id for e in found}) for topic, found in events.items()}
    report.facts["outbox_events"] = {schema: len(rows) for schema, rows in outbox.items()}
    report.facts["duplicate_messages_on_topics"] = {t: n for t, n in redelivered.items() if n}

    # Each consumer group (inbox.consumer) applied each event of the topics it reads, once (of the types it acts
    # on, when it names them: the others are skipped without an inbox row).
    applied: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in inbox:
        applied[(row["consumer"], row["topic"])].append(str(row["event_id"]))
    for (consumer, topic), ids in sorted(applied.items()):
        repeats = [i for i, n in Counter(ids).items() if n > 1]
        if repeats:
            report.violated(f"{consumer} applied {len(repeats)} event(s) of {topic} more than once")
        types = (acts_on or {}).get((consumer, topic), ())
        expected = {e.event_id for e in events.get(topic, []) if not types or e.event_type in types}
        missing = expected - set(ids)
        if missing:
            report.violated(f"{consumer} never applied {len(missing)} event(s) of {topic}, e.g. {sorted(missing)[0]}")
        unknown = set(ids) - on_topic.get(topic, set())
        if unknown:
            report.violated(f"{consumer} applied {len(unknown)} event(s) that are not on {topic}")
    report.facts["consumers"] = len({c for c, _ in applied})
    for topic, found in dead_letters.items():
        if found:
            report.violated(f"{len(found)} message(s) parked on {dlq_topic(topic)}")


def _check_effects_once(
    report: Report,
    orders: Mapping[str, asyncpg.Record],
    reservations: list[asyncpg.Record],
    shipments: list[asyncpg.Record],
    events: Mapping[str, list[TopicEvent]],
) -> None:
    shipped = Counter(str(r["order_id"]) for r in shipments)
    for order_id, row in orders.items():
        expected = 1 if row["status"] in ("paid", "refunded") else 0
        if shipped[order_id] != expected:
            report.violated(f"order {order_id} is {row['status']} and has {shipped[order_id]} shipment(s)")
    answers: dict[str, set[str]] = defaultdict(set)
    releases: dict[str, set[str]] = defaultdict(set)
    for e in events.get(topics.CATALOG_RESERVATIONS, []):
        if e.order_id is None:
            continue
        if e.event_type in ("StockReserved", "StockRejected"):
            answers[e.order_id].add(e.event_id)
        elif e.event_type == "StockReleased":
            releases[e.order_id].add(e.event_id)
    placed = {
        e.order_id for e in events.get(topics.CHECKOUT_ORDERS, []) if e.event_type == "OrderPlaced" and e.order_id
    }
    for order_id in sorted(placed):
        if len(answers[order_id]) != 1:
            report.violated(f"catalog answered order {order_id} {len(answers[order_id])} times (expected once)")
    reserved_for = {str(r["order_id"]) for r in reservations}
    if reserved_for != placed:
        report.violated(
            f"catalog holds {len(reservations)} reservations for {len(placed)} orders placed "
            f"(unknown: {sorted(reserved_for - placed)[:3]}, missing: {sorted(placed - reserved_for)[:3]})"
        )
    for order_id, ids in releases.items():
        if len(ids) > 1:
            report.violated(f"catalog released the stock of order {order_id} {len(ids)} times (at most once)")


async def reconcile(
    *,
    database_dsn: str,
    kafka_bootstrap: str,
    topic_namespace: str,
    stripe_base_url: str,
    initial_stock: Mapping[uuid.UUID, int],
    accepted_orders: Collection[uuid.UUID],
    stripe_api_key: str = DEV_STRIPE_API_KEY,
) -> Report:
    """Check every invariant of a run whose services share the database ``database_dsn`` (a superuser DSN)."""
    report = Report()
    conn = await asyncpg.connect(database_dsn)
    try:
        schemas = await _schemas(conn)
        orders = {
            str(r["id"]): r
            for r in await _fetch(
                conn, "SELECT id, status, product_id, quantity, payment_intent_id FROM checkout.orders"
            )
        }
        products = {
            r["id"]: r
            for r in await _fetch(conn, "SELECT id, stock_available, stock_reserved, stock_sold FROM catalog.products")
        }
        reservations = await _fetch(conn, "SELECT order_id, status FROM catalog.reservations")
        allocations = await _fetch(
            conn,
            """SELECT p.id, p.stock_allocated, p.stock_returning, p.allocation_generation,
                      (SELECT count(*) FROM checkout.stock_allocation_units u
                       WHERE u.product_id = p.id AND u.generation = a.generation) AS units_left,
                      a.generation AS checkout_generation
               FROM catalog.products p LEFT JOIN checkout.stock_allocations a ON a.product_id = p.id""",
        )
        shipments = await _fetch(conn, "SELECT order_id FROM tracking.shipments") if "tracking" in schemas else []
        # One row per event: a row may carry several (more_event_ids, after its first).
        outbox = {
            s: await _fetch(
                conn,
                f"""SELECT e.event_id, o.topic, o.event_type, o.published_at FROM {s}.outbox o
                    CROSS JOIN LATERAL unnest(o.event_id || coalesce(o.more_event_ids, '{{}}'::uuid[]))
                                       AS e(event_id)""",
            )
            for s in schemas
        }
        inbox = [r for s in schemas for r in await _fetch(conn, f"SELECT consumer, event_id, topic FROM {s}.inbox")]
    finally:
        await conn.close()

    events = await read_events(kafka_bootstrap, topic_namespace, TOPICS)
    dead_letters = await read_events(kafka_bootstrap, topic_namespace, [dlq_topic(t) for t in TOPICS])
    intents = await stripe_intents_by_order(stripe_base_url, stripe_api_key)

    _check_orders(report, orders, {str(o) for o in accepted_orders}, events[topics.CHECKOUT_ORDERS])
    _check_payments(report, orders, intents)
    _check_stock(report, initial_stock, products, orders, reservations)
    _check_allocations(report, allocations)
    # The event types each consumer group acts on, per topic (empty: all): it keeps no inbox row of the others.
    acts_on = {
        (f"{topic_namespace}{s.name}.{g.name}", r.topic): r.handles
        for s in SYSTEM.services
        for g in s.reliable_groups
        for r in g.reads
    }
    _check_delivery(report, outbox, inbox, events, {t: dead_letters[dlq_topic(t)] for t in TOPICS}, acts_on)
    _check_effects_once(report, orders, reservations, shipments, events)
    return report
