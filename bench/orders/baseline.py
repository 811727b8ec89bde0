"""The hand-written baseline: the same purchase, straight on aiokafka and asyncpg, with no framework.

Same broker, same database server, same payment stand-in and the same hops and
commits as the shop on the purchase path, each stage in its own process as the
services are:

- intake (in the load generator, instead of checkout's HTTP API): one transaction
  inserts the order and its outbox row; the row is produced as ``OrderPlaced`` and
  marked published (marks are batched, as our relay marks a batch);
- ``reserve`` (catalog's part): ``OrderPlaced`` → inbox row, stock row locked and
  decremented, reservation, outbox rows → ``StockReserved`` and ``ProductUpdated``;
  ``OrderPaid`` → the reservation becomes a sale;
- ``pay`` (checkout's part): ``StockReserved`` → the order is marked reserved, a
  second transaction records the payment attempt, the stand-in is called (same
  latency, same form body as the Stripe library sends), a third marks it paid with
  the ``OrderPaid`` outbox row; ``ProductUpdated`` and ``ShipmentCreated`` update its
  read models;
- ``ship`` (tracking's part): every ``checkout`` event is claimed in its inbox;
  ``OrderPaid`` creates the shipment and its ``ShipmentCreated`` outbox row.

Each consumer takes a batch (up to 100 records, the services' fetch wait; producers linger as
the services' relays do), applies it in one transaction as the shop's reliable subscribers do,
produces what it wrote, marks those outbox rows, then commits offsets. The pay
stage, as checkout's payment worker, then claims the reserved orders in one
transaction, calls the stand-in for each concurrently and applies each answer in
one transaction of its own.
What the shop does and this does not: HTTP and JSON validation at the edge,
Stripe webhooks, feed's read model of products, FastStream and pydantic.

    python -m bench.orders.baseline --stage reserve --dsn ... --bootstrap ... --namespace ... --standin-url ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from tweetshop_devstack.infra import ManagedProcess, stop_all
from tweetshop_devstack.testing import create_database, dsn_with_database
from tweetshop_platform.kafka import ensure_topics
from tweetshop_platform.settings import ServiceSettings

from bench.common.gc_settings import collect_like_the_services, freeze_what_started
from bench.common.stack import PRODUCT_PRICE_MINOR, REPO_ROOT

ORDERS = "baseline.orders"
RESERVATIONS = "baseline.reservations"
PRODUCTS = "baseline.products"
SHIPMENTS = "baseline.shipments"
TOPICS = (ORDERS, RESERVATIONS, PRODUCTS, SHIPMENTS)
PARTITIONS = 6
STAGES = ("reserve", "pay", "ship")
POOL_MAX = 10  # as the services' default database_pool_max

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id uuid PRIMARY KEY, product_id uuid NOT NULL, quantity int NOT NULL, amount_minor bigint NOT NULL,
    currency text NOT NULL, status text NOT NULL, stock_reserved bool NOT NULL DEFAULT false,
    payment_attempts int NOT NULL DEFAULT 0, payment_intent_id text, shipment_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS products (
    id uuid PRIMARY KEY, stock_available int NOT NULL, stock_reserved int NOT NULL DEFAULT 0,
    stock_sold int NOT NULL DEFAULT 0, version int NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS product_views (id uuid PRIMARY KEY, stock_available int NOT NULL, version int NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (
    order_id uuid PRIMARY KEY, product_id uuid NOT NULL, quantity int NOT NULL, status text NOT NULL);
CREATE TABLE IF NOT EXISTS shipments (
    id uuid PRIMARY KEY, order_id uuid NOT NULL UNIQUE, status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS inbox (consumer text NOT NULL, event_id uuid NOT NULL, PRIMARY KEY (consumer, event_id));
CREATE TABLE IF NOT EXISTS outbox (
    id bigserial PRIMARY KEY, topic text NOT NULL, message_key text NOT NULL, payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz);
"""


@dataclass(frozen=True)
class Out:
    """An outbox row written in a handler's transaction, to produce after it commits."""

    outbox_id: int
    topic: str
    key: str
    payload: bytes


def event(event_type: str, **fields: Any) -> dict[str, Any]:
    """A minimal envelope: enough to dedupe and route."""
    return {"event_id": str(uuid.uuid4()), "event_type": event_type, **fields}


async def write_outbox(conn: asyncpg.Connection, topic: str, key: str, body: dict[str, Any]) -> Out:
    """Insert one outbox row in the caller's transaction."""
    payload = json.dumps(body).encode()
    outbox_id = await conn.fetchval(
        "INSERT INTO outbox (topic, message_key, payload) VALUES ($1, $2, $3) RETURNING id", topic, key, payload
    )
    return Out(int(outbox_id), topic, key, payload)


async def claim_inbox(conn: asyncpg.Connection, consumer: str, body: dict[str, Any]) -> bool:
    """Record the event id for this consumer; False for a duplicate."""
    return bool(
        await conn.fetchval(
            "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
            consumer,
            uuid.UUID(body["event_id"]),
        )
    )


# A consumer's work on one batch, in one transaction: the outbox rows it wrote, and what to do after the commit.
Handler = Callable[[asyncpg.Connection, list[dict[str, Any]]], Awaitable[tuple[list[Out], Callable[[], None] | None]]]

# As the shop's services have them (tweetshop_platform.settings): the consumer's longest fetch wait, the relay's
# linger, and the batch.
FETCH_MAX_WAIT_MS = int(ServiceSettings.model_fields["kafka_fetch_max_wait_ms"].default)
LINGER_MS = int(ServiceSettings.model_fields["kafka_linger_ms"].default)
BATCH_MAX_RECORDS = 100
BATCH_TIMEOUT_MS = 10


class Stage:
    """One baseline process: its consumers, their handlers, one producer and one pool."""

    def __init__(self, name: str, pool: asyncpg.Pool, producer: AIOKafkaProducer, namespace: str) -> None:
        self.name = name
        self.pool = pool
        self.producer = producer
        self.namespace = namespace
        self.background: set[asyncio.Task[None]] = set()

    def t(self, logical: str) -> str:
        """Physical topic name."""
        return self.namespace + logical

    async def consume(self, bootstrap: str, topic: str, handler: Handler) -> None:
        """Batch → one transaction for all of it → produce → mark → commit offsets → after-commit, forever."""
        consumer = AIOKafkaConsumer(
            self.t(topic),
            bootstrap_servers=bootstrap,
            group_id=f"{self.namespace}{self.name}.{topic}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=BATCH_TIMEOUT_MS, max_records=BATCH_MAX_RECORDS)
                messages = [m for ms in batch.values() for m in ms]
                if not messages:
                    await asyncio.sleep(BATCH_TIMEOUT_MS / 1000)  # as FastStream's batch subscriber does
                    continue
                bodies = [json.loads(m.value or b"{}") for m in messages]
                async with self.pool.acquire() as conn, conn.transaction():
                    outs, after = await handler(conn, bodies)
                await self.publish(outs)
                await consumer.commit()
                if after is not None:
                    after()
        finally:
            await consumer.stop()

    async def publish(self, outs: list[Out]) -> None:
        """Produce outbox rows, wait for every ack, then mark them in one statement."""
        if not outs:
            return
        futures = [await self.producer.send(self.t(o.topic), o.payload, key=o.key.encode()) for o in outs]
        await asyncio.gather(*futures)
        await self.pool.execute(
            "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", [o.outbox_id for o in outs]
        )

    def spawn(self, work: Awaitable[None]) -> None:
        """Run ``work`` in the background (the payment calls, as the shop's payment worker has them)."""

        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self.background.add(task)
        task.add_done_callback(self.background.discard)


# --- reserve (catalog's part) -----------------------------------------------------------------------------------


def reserve_handlers(stage: Stage) -> dict[str, Handler]:
    async def on_orders(conn: asyncpg.Connection, bodies: list[dict[str, Any]]) -> tuple[list[Out], None]:
        outs: list[Out] = []
        for body in bodies:
            if not await claim_inbox(conn, "reserve.orders", body):
                continue
            order_id = uuid.UUID(body["order_id"])
            if body["event_type"] == "OrderPlaced":
                product = await conn.fetchrow(
                    "SELECT id, stock_available, version FROM products WHERE id = $1 FOR UPDATE",
                    uuid.UUID(body["product_id"]),
                )
                assert product is not None
                quantity = int(body["quantity"])
                row = await conn.fetchrow(
                    """UPDATE products SET stock_available = stock_available - $2, stock_reserved = stock_reserved + $2,
                       version = version + 1 WHERE id = $1 RETURNING stock_available, version""",
                    product["id"],
                    quantity,
                )
                assert row is not None
                await conn.execute(
                    "INSERT INTO reservations (order_id, product_id, quantity, status) VALUES ($1, $2, $3, 'reserved')",
                    order_id,
                    product["id"],
                    quantity,
                )
                reserved = event("StockReserved", order_id=str(order_id), product_id=body["product_id"])
                outs.append(await write_outbox(conn, RESERVATIONS, str(order_id), reserved))
                updated = event(
                    "ProductUpdated",
                    product_id=body["product_id"],
                    stock_available=row["stock_available"],
                    version=row["version"],
                )
                outs.append(await write_outbox(conn, PRODUCTS, body["product_id"], updated))
            elif body["event_type"] == "OrderPaid":
                reservation = await conn.fetchrow(
                    "SELECT product_id, quantity FROM reservations WHERE order_id = $1", order_id
                )
                if reservation is not None:
                    await conn.execute(
                        """UPDATE products SET stock_reserved = stock_reserved - $2, stock_sold = stock_sold + $2
                           WHERE id = $1""",
                        reservation["product_id"],
                        reservation["quantity"],
                    )
                    await conn.execute("UPDATE reservations SET status = 'sold' WHERE order_id = $1", order_id)
        return outs, None

    return {ORDERS: on_orders}


# --- pay (checkout's part) --------------------------------------------------------------------------------------


def pay_handlers(stage: Stage, standin_url: str) -> dict[str, Handler]:
    client = httpx.AsyncClient(
        base_url=standin_url,
        timeout=20.0,
        limits=httpx.Limits(max_connections=2000, max_keepalive_connections=2000),
        headers={"Authorization": "Bearer sk_test_baseline"},
    )

    async def pay(order_id: uuid.UUID, amount_minor: int, currency: str, attempt: int) -> None:
        response = await client.post(
            "/v1/payment_intents",
            data={
                "amount": str(amount_minor),
                "currency": currency.lower(),
                "payment_method": "pm_card_visa",
                "confirm": "true",
                "payment_method_types[0]": "card",
                "metadata[order_id]": str(order_id),
            },
            headers={"Idempotency-Key": f"baseline-{order_id}-{attempt}"},
        )
        response.raise_for_status()
        intent = response.json()
        async with stage.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE orders SET status = 'paid', payment_intent_id = $2, updated_at = now() WHERE id = $1",
                order_id,
                intent["id"],
            )
            paid = event("OrderPaid", order_id=str(order_id), payment_intent_id=intent["id"])
            out = await write_outbox(conn, ORDERS, str(order_id), paid)
        await stage.publish([out])

    async def on_reservations(
        conn: asyncpg.Connection, bodies: list[dict[str, Any]]
    ) -> tuple[list[Out], Callable[[], None]]:
        # As the shop: the reservations are recorded in the consumer's transaction; the payment worker then claims
        # them in a transaction of its own (the attempt is committed before the call), and each answer is applied
        # in one more.
        reserved: list[uuid.UUID] = []
        for body in bodies:
            if not await claim_inbox(conn, "pay.reservations", body):
                continue
            order_id = uuid.UUID(body["order_id"])
            await conn.execute(
                "UPDATE orders SET stock_reserved = true, updated_at = now() WHERE id = $1 AND status = 'pending'",
                order_id,
            )
            reserved.append(order_id)

        def after() -> None:
            if reserved:
                stage.spawn(claim_and_pay(reserved))

        return [], after

    async def claim_and_pay(order_ids: list[uuid.UUID]) -> None:
        async with stage.pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetch(
                """UPDATE orders SET payment_attempts = payment_attempts + 1, updated_at = now()
                   WHERE id = ANY($1::uuid[]) AND status = 'pending'
                   RETURNING id, amount_minor, currency, payment_attempts""",
                order_ids,
            )
        await asyncio.gather(*(pay(r["id"], r["amount_minor"], r["currency"], r["payment_attempts"]) for r in claimed))

    async def on_products(conn: asyncpg.Connection, bodies: list[dict[str, Any]]) -> tuple[list[Out], None]:
        for body in bodies:
            if await claim_inbox(conn, "pay.products", body):
                await conn.execute(
                    """INSERT INTO product_views (id, stock_available, version) VALUES ($1, $2, $3)
                       ON CONFLICT (id) DO UPDATE SET stock_available = EXCLUDED.stock_available,
                       version = EXCLUDED.version WHERE product_views.version < EXCLUDED.version""",
                    uuid.UUID(body["product_id"]),
                    int(body["stock_available"]),
                    int(body["version"]),
                )
        return [], None

    async def on_shipments(conn: asyncpg.Connection, bodies: list[dict[str, Any]]) -> tuple[list[Out], None]:
        for body in bodies:
            if await claim_inbox(conn, "pay.shipments", body):
                await conn.execute(
                    "UPDATE orders SET shipment_id = $2, updated_at = now() WHERE id = $1",
                    uuid.UUID(body["order_id"]),
                    uuid.UUID(body["shipment_id"]),
                )
        return [], None

    return {RESERVATIONS: on_reservations, PRODUCTS: on_products, SHIPMENTS: on_shipments}


# --- ship (tracking's part) -------------------------------------------------------------------------------------


def ship_handlers(stage: Stage) -> dict[str, Handler]:
    async def on_orders(conn: asyncpg.Connection, bodies: list[dict[str, Any]]) -> tuple[list[Out], None]:
        outs: list[Out] = []
        for body in bodies:
            if not await claim_inbox(conn, "ship.orders", body) or body["event_type"] != "OrderPaid":
                continue
            shipment_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO shipments (id, order_id, status) VALUES ($1, $2, 'label_created')",
                shipment_id,
                uuid.UUID(body["order_id"]),
            )
            created = event("ShipmentCreated", order_id=body["order_id"], shipment_id=str(shipment_id))
            outs.append(await write_outbox(conn, SHIPMENTS, str(shipment_id), created))
        return outs, None

    return {ORDERS: on_orders}


async def run_stage(name: str, dsn: str, bootstrap: str, namespace: str, standin_url: str) -> None:
    """Run one baseline stage until killed."""
    collect_like_the_services()
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=POOL_MAX)
    assert pool is not None
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=LINGER_MS)
    await producer.start()
    stage = Stage(name, pool, producer, namespace)
    handlers = {
        "reserve": lambda: reserve_handlers(stage),
        "pay": lambda: pay_handlers(stage, standin_url),
        "ship": lambda: ship_handlers(stage),
    }[name]()
    print(f"baseline stage {name} consuming {sorted(handlers)}", flush=True)
    freeze_what_started()
    try:
        await asyncio.gather(*(stage.consume(bootstrap, topic, h) for topic, h in handlers.items()))
    finally:
        await producer.stop()
        await pool.close()


# --- the controller (in the benchmark process) ------------------------------------------------------------------


class Intake:
    """The baseline's order intake, run by the load generator: insert order + outbox row, produce, mark."""

    def __init__(self, pool: asyncpg.Pool, producer: AIOKafkaProducer, namespace: str, product_id: uuid.UUID):
        self._pool = pool
        self._producer = producer
        self._namespace = namespace
        self._product_id = product_id
        self.placed: dict[str, float] = {}
        self._to_mark: list[int] = []
        self._marker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the task that marks published rows in batches."""
        self._marker = asyncio.create_task(self._mark_forever())

    async def _mark_forever(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            if self._to_mark:
                ids, self._to_mark = self._to_mark, []
                await self._pool.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", ids)

    async def place(self) -> tuple[str | None, str | None]:
        """One order, timed from just before its transaction."""
        started = time.monotonic()
        order_id = uuid.uuid4()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    """INSERT INTO orders (id, product_id, quantity, amount_minor, currency, status)
                       VALUES ($1, $2, 1, $3, 'EUR', 'pending')""",
                    order_id,
                    self._product_id,
                    PRODUCT_PRICE_MINOR,
                )
                placed = event(
                    "OrderPlaced",
                    order_id=str(order_id),
                    product_id=str(self._product_id),
                    quantity=1,
                    amount_minor=PRODUCT_PRICE_MINOR,
                )
                out = await write_outbox(conn, ORDERS, str(order_id), placed)
            self.placed[str(order_id)] = started
            await (await self._producer.send(self._namespace + out.topic, out.payload, key=out.key.encode()))
            self._to_mark.append(out.outbox_id)
        except (OSError, asyncpg.PostgresError) as exc:
            return None, type(exc).__name__
        return str(order_id), None

    async def stop(self) -> None:
        """Stop marking."""
        if self._marker is not None:
            self._marker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._marker


class BaselinePipeline:
    """Creates the baseline's database and topics, runs its three stage processes, and its intake."""

    def __init__(self, admin_dsn: str, bootstrap: str, standin_url: str, logs_dir: Path) -> None:
        token = uuid.uuid4().hex[:8]
        self.database = f"bench_baseline_{token}"
        self.namespace = f"bl{token}."
        self.dsn = dsn_with_database(admin_dsn, self.database)
        self.admin_dsn = admin_dsn
        self.bootstrap = bootstrap
        self.standin_url = standin_url
        self.product_id = uuid.uuid4()
        self.processes = {
            name: ManagedProcess(
                f"baseline-{name}",
                [
                    sys.executable,
                    "-m",
                    "bench.orders.baseline",
                    "--stage",
                    name,
                    "--dsn",
                    self.dsn,
                    "--bootstrap",
                    bootstrap,
                    "--namespace",
                    self.namespace,
                    "--standin-url",
                    standin_url,
                ],
                log_path=logs_dir / f"baseline-{name}.log",
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                cwd=REPO_ROOT,
            )
            for name in STAGES
        }
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        self.intake: Intake | None = None

    def topic(self, logical: str) -> str:
        """Physical topic name."""
        return self.namespace + logical

    def pids(self) -> dict[str, int | None]:
        """Pids of the stage processes."""
        return {f"baseline-{name}": p.pid for name, p in self.processes.items()}

    async def start(self) -> Intake:
        """Database, schema, stock, topics, stage processes, intake."""
        await create_database(self.admin_dsn, self.database)
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(SCHEMA)
            await conn.execute(
                "INSERT INTO products (id, stock_available) VALUES ($1, $2)", self.product_id, 1_000_000_000
            )
        finally:
            await conn.close()
        await ensure_topics(self.bootstrap, [self.topic(t) for t in TOPICS], PARTITIONS)
        for process in self.processes.values():
            process.start()
        self.pool = await asyncpg.create_pool(self.dsn, min_size=2, max_size=POOL_MAX)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=LINGER_MS)
        await self.producer.start()
        assert self.pool is not None
        self.intake = Intake(self.pool, self.producer, self.namespace, self.product_id)
        self.intake.start()
        return self.intake

    def check_running(self) -> None:
        """Fail with the log tail if a stage process died."""
        for process in self.processes.values():
            if process.has_exited():
                raise RuntimeError(f"{process.name} exited; last lines:\n{process.tail()}")

    async def stop(self) -> None:
        """Stop the intake, the stage processes, close connections."""
        if self.intake is not None:
            await self.intake.stop()
        await asyncio.to_thread(stop_all, list(self.processes.values()), 10.0)
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of a stage process."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=STAGES, required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--standin-url", required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_stage(args.stage, args.dsn, args.bootstrap, args.namespace, args.standin_url))


if __name__ == "__main__":
    main()
