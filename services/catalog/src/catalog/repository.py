"""The only SQL of catalog: `$n` parameters, explicit columns, rows turned into domain objects at once."""

from __future__ import annotations

import uuid
from typing import Any

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
