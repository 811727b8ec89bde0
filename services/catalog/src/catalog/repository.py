"""The only SQL of catalog: `$n` parameters, explicit columns, rows turned into domain objects at once."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, Protocol

import asyncpg

from .domain import Product, Reservation

_PRODUCT_COLUMNS = (
    "id, merchant_id, title, description, image_url, price_minor, currency, "
    "stock_available, stock_reserved, stock_sold, status, version, units_reserved_total, stock_allocated, "
    "allocation_generation, stock_returning"
)


_PRODUCT_FIELDS = tuple(column.strip() for column in _PRODUCT_COLUMNS.split(","))


def _product(row: asyncpg.Record) -> Product:
    """The product of a row that has (at least) ``_PRODUCT_COLUMNS``, read by name."""
    return Product(**{field: row[field] for field in _PRODUCT_FIELDS})


async def insert_merchant(
    conn: asyncpg.Connection, merchant_id: uuid.UUID, handle: str, name: str, key_hash: str
) -> bool:
    """False when the handle is taken."""
    inserted = await conn.fetchval(
        """INSERT INTO merchants (id, handle, name, api_key_hash) VALUES ($1, $2, $3, $4)
           ON CONFLICT (handle) DO NOTHING RETURNING true""",
        merchant_id,
        handle,
        name,
        key_hash,
    )
    return bool(inserted)


async def get_merchant(conn: asyncpg.Connection, merchant_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT id, handle, name, api_key_hash, created_at FROM merchants WHERE id = $1", merchant_id
    )
    return dict(row.items()) if row else None


async def get_merchant_by_handle(conn: asyncpg.Connection, handle: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT id, handle, name, created_at FROM merchants WHERE handle = $1", handle)
    return dict(row.items()) if row else None


async def get_merchant_by_key_hash(conn: asyncpg.Connection, key_hash: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT id, handle, name, created_at FROM merchants WHERE api_key_hash = $1", key_hash)
    return dict(row.items()) if row else None


async def set_merchant_key(conn: asyncpg.Connection, merchant_id: uuid.UUID, key_hash: str) -> None:
    await conn.execute("UPDATE merchants SET api_key_hash = $2 WHERE id = $1", merchant_id, key_hash)


async def insert_product(conn: asyncpg.Connection, p: Product) -> None:
    await conn.execute(
        f"""INSERT INTO products ({_PRODUCT_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)""",
        p.id,
        p.merchant_id,
        p.title,
        p.description,
        p.image_url,
        p.price_minor,
        p.currency,
        p.stock_available,
        p.stock_reserved,
        p.stock_sold,
        p.status,
        p.version,
        p.units_reserved_total,
        p.stock_allocated,
        p.allocation_generation,
        p.stock_returning,
    )


async def get_product(conn: asyncpg.Connection, product_id: uuid.UUID, *, for_update: bool = False) -> Product | None:
    """One product; ``for_update`` locks its row until the transaction ends (concurrent orders queue here)."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE id = $1{lock}", product_id)
    return _product(row) if row else None


async def list_products(conn: asyncpg.Connection, merchant_id: uuid.UUID, limit: int) -> list[Product]:
    rows = await conn.fetch(
        f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE merchant_id = $1 ORDER BY created_at DESC LIMIT $2",
        merchant_id,
        limit,
    )
    return [_product(r) for r in rows]


_UPDATE_PRODUCT = """UPDATE products SET title = $2, description = $3, image_url = $4, price_minor = $5,
               stock_available = $6, stock_reserved = $7, stock_sold = $8, status = $9, version = $10,
               units_reserved_total = $11, stock_allocated = $12, allocation_generation = $13,
               stock_returning = $14, updated_at = now()
           WHERE id = $1"""


def _product_values(p: Product) -> tuple[Any, ...]:
    return (
        p.id,
        p.title,
        p.description,
        p.image_url,
        p.price_minor,
        p.stock_available,
        p.stock_reserved,
        p.stock_sold,
        p.status,
        p.version,
        p.units_reserved_total,
        p.stock_allocated,
        p.allocation_generation,
        p.stock_returning,
    )


async def update_product(conn: asyncpg.Connection, p: Product) -> None:
    await conn.execute(_UPDATE_PRODUCT, *_product_values(p))


_SAVE_RESERVATION = """INSERT INTO reservations (order_id, product_id, quantity, status, reason)
           VALUES (${0}, ${1}, ${2}, ${3}, ${4})
           ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason,
               updated_at = now()"""


async def save_reservation(conn: asyncpg.Connection, r: Reservation) -> None:
    values = (r.order_id, r.product_id, r.quantity, r.status, r.reason)
    await conn.execute(_SAVE_RESERVATION.format(1, 2, 3, 4, 5), *values)


async def lock_reservation_and_product(
    conn: asyncpg.Connection, order_id: uuid.UUID, product_id: uuid.UUID | None = None
) -> tuple[Reservation | None, Product | None]:
    """The order's reservation and its product (``product_id``'s when the order has none yet), each row locked
    (FOR UPDATE) until the transaction ends, in one round trip; the reservation is locked first, then the product
    (every path that locks both does so in this order). Both CTEs are MATERIALIZED, so each is run once and whole."""
    row = await conn.fetchrow(
        f"""WITH r AS MATERIALIZED (
                SELECT order_id, product_id, quantity, status, reason FROM reservations WHERE order_id = $1 FOR UPDATE),
            p AS MATERIALIZED (
                SELECT {_PRODUCT_COLUMNS} FROM products WHERE id = coalesce((SELECT product_id FROM r), $2) FOR UPDATE)
            SELECT r.order_id AS r_order_id, r.product_id AS r_product_id, r.quantity AS r_quantity,
                   r.status AS r_status, r.reason AS r_reason, p.*
            FROM (SELECT 1) AS one LEFT JOIN r ON true LEFT JOIN p ON true""",
        order_id,
        product_id,
    )
    assert row is not None
    reservation = (
        Reservation(row["r_order_id"], row["r_product_id"], row["r_quantity"], row["r_status"], row["r_reason"])
        if row["r_order_id"] is not None
        else None
    )
    product = _product(row) if row["id"] else None
    return reservation, product


async def save_product_and_reservation(conn: asyncpg.Connection, p: Product, r: Reservation) -> None:
    """``update_product`` and ``save_reservation`` in one statement (a data-modifying CTE runs exactly once)."""
    await conn.execute(
        f"WITH updated AS ({_UPDATE_PRODUCT}) " + _SAVE_RESERVATION.format(15, 16, 17, 18, 19),
        *_product_values(p),
        r.order_id,
        r.product_id,
        r.quantity,
        r.status,
        r.reason,
    )


class OrderRows(Protocol):
    """Where the order events' reservations and products are locked, read and written: at once, one statement per
    call (``Rows``), or a consumer batch's rows locked and read in one statement and written in one at its end
    (``BatchRows``). The use cases say the same through either."""

    async def lock(
        self, order_id: uuid.UUID, product_id: uuid.UUID | None = None
    ) -> tuple[Reservation | None, Product | None]:
        """``lock_reservation_and_product``."""

    async def save(self, p: Product, r: Reservation) -> None:
        """``save_product_and_reservation``."""

    async def save_reservation(self, r: Reservation) -> None:
        """``save_reservation``."""


class Rows:
    """The database itself: each call is its statement."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock(
        self, order_id: uuid.UUID, product_id: uuid.UUID | None = None
    ) -> tuple[Reservation | None, Product | None]:
        return await lock_reservation_and_product(self.conn, order_id, product_id)

    async def save(self, p: Product, r: Reservation) -> None:
        await save_product_and_reservation(self.conn, p, r)

    async def save_reservation(self, r: Reservation) -> None:
        await save_reservation(self.conn, r)


class BatchRows:
    """A consumer batch's reservations and products, locked and read in one statement (``lock_all``), then read and
    changed in memory in the order of the events, and written in one statement at the end (``write``): what each
    event would have read and written, as one event after the other in the same transaction, with two statements.

    ``lock`` of an order or a product ``lock_all`` was not asked for locks it then, one statement (the use cases
    never need it: every order event names its order, and an OrderPlaced its product)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._asked_orders: set[uuid.UUID] = set()
        self._asked_products: set[uuid.UUID] = set()
        self._reservations: dict[uuid.UUID, Reservation] = {}
        self._products: dict[uuid.UUID, Product] = {}
        self._changed_reservations: dict[uuid.UUID, None] = {}
        self._changed_products: dict[uuid.UUID, None] = {}

    async def lock_all(self, order_ids: Iterable[uuid.UUID], product_ids: Iterable[uuid.UUID]) -> None:
        """Lock and read the reservations of ``order_ids``, then the products of those reservations and of
        ``product_ids``, each in id order (as every statement that locks several of them does: no deadlock between
        two), the reservations first (as ``lock_reservation_and_product``)."""
        orders = list(dict.fromkeys(order_ids))
        products = list(dict.fromkeys(product_ids))
        rows = await self.conn.fetch(
            f"""WITH r AS MATERIALIZED (
                    SELECT order_id AS r_order_id, product_id AS r_product_id, quantity AS r_quantity,
                           status AS r_status, reason AS r_reason
                    FROM reservations WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR UPDATE),
                p AS MATERIALIZED (
                    SELECT {_PRODUCT_COLUMNS} FROM products
                    WHERE id IN (SELECT r_product_id FROM r UNION SELECT unnest($2::uuid[]))
                    ORDER BY id FOR UPDATE)
                SELECT * FROM (SELECT 1 AS r_kind, * FROM r) AS r FULL JOIN (SELECT 2 AS p_kind, * FROM p) AS p
                    ON r.r_kind = p.p_kind""",
            orders,
            products,
        )
        self._asked_orders.update(orders)
        self._asked_products.update(products)
        for row in rows:
            if row["r_order_id"] is not None:
                reservation = Reservation(
                    row["r_order_id"], row["r_product_id"], row["r_quantity"], row["r_status"], row["r_reason"]
                )
                self._reservations[reservation.order_id] = reservation
                self._asked_products.add(reservation.product_id)
            else:
                self._products[row["id"]] = _product(row)

    async def lock(
        self, order_id: uuid.UUID, product_id: uuid.UUID | None = None
    ) -> tuple[Reservation | None, Product | None]:
        if order_id not in self._asked_orders:
            await self.lock_all([order_id], [product_id] if product_id is not None else [])
        reservation = self._reservations.get(order_id)
        wanted = reservation.product_id if reservation is not None else product_id
        if wanted is None:
            return reservation, None
        if wanted not in self._asked_products:
            await self.lock_all([], [wanted])
        return reservation, self._products.get(wanted)

    async def save(self, p: Product, r: Reservation) -> None:
        self._products[p.id] = p
        self._changed_products[p.id] = None
        await self.save_reservation(r)

    async def save_reservation(self, r: Reservation) -> None:
        self._reservations[r.order_id] = r
        self._asked_orders.add(r.order_id)
        self._changed_reservations[r.order_id] = None

    async def write(self) -> None:
        """Every product and reservation changed, each as it is now, in one statement (nothing changed: none)."""
        if not self._changed_products and not self._changed_reservations:
            return
        products = [self._products[i] for i in self._changed_products]
        reservations = [self._reservations[i] for i in self._changed_reservations]
        columns = list(zip(*(_product_values(p) for p in products), strict=True)) or [()] * 14
        await self.conn.execute(
            """WITH updated AS (
                   UPDATE products p SET title = u.title, description = u.description, image_url = u.image_url,
                       price_minor = u.price_minor, stock_available = u.stock_available,
                       stock_reserved = u.stock_reserved, stock_sold = u.stock_sold, status = u.status,
                       version = u.version, units_reserved_total = u.units_reserved_total,
                       stock_allocated = u.stock_allocated, allocation_generation = u.allocation_generation,
                       stock_returning = u.stock_returning, updated_at = now()
                   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::int[], $7::int[],
                               $8::int[], $9::text[], $10::int[], $11::bigint[], $12::int[], $13::int[], $14::int[])
                        AS u(id, title, description, image_url, price_minor, stock_available, stock_reserved,
                             stock_sold, status, version, units_reserved_total, stock_allocated,
                             allocation_generation, stock_returning)
                   WHERE p.id = u.id)
               INSERT INTO reservations (order_id, product_id, quantity, status, reason)
               SELECT * FROM unnest($15::uuid[], $16::uuid[], $17::int[], $18::text[], $19::text[])
               ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason,
                   updated_at = now()""",
            *(list(column) for column in columns),
            [r.order_id for r in reservations],
            [r.product_id for r in reservations],
            [r.quantity for r in reservations],
            [r.status for r in reservations],
            [r.reason for r in reservations],
        )
