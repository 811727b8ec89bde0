"""The only SQL of feed: `$n` parameters, explicit columns, rows turned into domain objects at once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from .domain import Cursor, Follow, Merchant, Product, Tweet, TweetView

_PRODUCT_COLUMNS = (
    "id, merchant_id, title, description, image_url, price_minor, currency, stock_available, status, version"
)

# One tweet with the live state of its merchant and product (LEFT JOIN: either may be unknown).
_TWEET_VIEW_SELECT = """
    SELECT t.id, t.merchant_id, t.text, t.product_id, t.created_at,
           m.handle AS m_handle, m.name AS m_name,
           p.merchant_id AS p_merchant_id, p.title AS p_title, p.description AS p_description,
           p.image_url AS p_image_url, p.price_minor AS p_price_minor, p.currency AS p_currency,
           p.stock_available AS p_stock_available, p.status AS p_status, p.version AS p_version
    FROM tweets t
    LEFT JOIN merchants m ON m.id = t.merchant_id
    LEFT JOIN products p ON p.id = t.product_id
"""


def _product(row: asyncpg.Record) -> Product:
    return Product(**dict(row.items()))


def _tweet_view(row: asyncpg.Record) -> TweetView:
    tweet = Tweet(
        id=row["id"],
        merchant_id=row["merchant_id"],
        text=row["text"],
        product_id=row["product_id"],
        created_at=row["created_at"],
    )
    merchant = Merchant(row["merchant_id"], row["m_handle"], row["m_name"]) if row["m_handle"] is not None else None
    product = None
    if row["p_version"] is not None:
        product = Product(
            id=row["product_id"],
            merchant_id=row["p_merchant_id"],
            title=row["p_title"],
            description=row["p_description"],
            image_url=row["p_image_url"],
            price_minor=row["p_price_minor"],
            currency=row["p_currency"],
            stock_available=row["p_stock_available"],
            status=row["p_status"],
            version=row["p_version"],
        )
    return TweetView(tweet, merchant, product)


# --- read models -----------------------------------------------------------------------


async def upsert_merchant(conn: asyncpg.Connection, m: Merchant, api_key_hash: str | None = None) -> None:
    """Record a merchant (a redelivered event rewrites the same values).

    A key hash from the registration is taken only while none is stored: a later rotation wins over it.
    """
    await conn.execute(
        """INSERT INTO merchants (id, handle, name, api_key_hash) VALUES ($1, $2, $3, $4)
           ON CONFLICT (id) DO UPDATE SET handle = EXCLUDED.handle, name = EXCLUDED.name,
               api_key_hash = COALESCE(merchants.api_key_hash, EXCLUDED.api_key_hash), updated_at = now()""",
        m.id,
        m.handle,
        m.name,
        api_key_hash,
    )


async def set_merchant_key_hash(conn: asyncpg.Connection, merchant_id: uuid.UUID, api_key_hash: str) -> bool:
    """The merchant's new key (MerchantApiKeyRotated); False when the merchant is not known."""
    done = await conn.execute(
        "UPDATE merchants SET api_key_hash = $2, updated_at = now() WHERE id = $1", merchant_id, api_key_hash
    )
    return bool(done != "UPDATE 0")


async def get_merchant_key_hash(conn: asyncpg.Connection, merchant_id: uuid.UUID) -> str | None:
    found: str | None = await conn.fetchval("SELECT api_key_hash FROM merchants WHERE id = $1", merchant_id)
    return found


async def get_merchant(conn: asyncpg.Connection, merchant_id: uuid.UUID) -> Merchant | None:
    row = await conn.fetchrow("SELECT id, handle, name FROM merchants WHERE id = $1", merchant_id)
    return Merchant(**dict(row.items())) if row else None


async def get_product(conn: asyncpg.Connection, product_id: uuid.UUID, *, for_update: bool = False) -> Product | None:
    """Feed's copy of one product; ``for_update`` locks its row until the transaction ends."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE id = $1{lock}", product_id)
    return _product(row) if row else None


async def upsert_product_if_newer(conn: asyncpg.Connection, p: Product) -> bool:
    """Store ``p`` unless a version at least as new is stored already; True when it was stored.

    The version guard is in the statement itself, so two writers racing on a new product cannot let
    the older state win either.
    """
    stored = await conn.fetchval(
        f"""INSERT INTO products ({_PRODUCT_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (id) DO UPDATE SET
                merchant_id = EXCLUDED.merchant_id, title = EXCLUDED.title, description = EXCLUDED.description,
                image_url = EXCLUDED.image_url, price_minor = EXCLUDED.price_minor, currency = EXCLUDED.currency,
                stock_available = EXCLUDED.stock_available, status = EXCLUDED.status, version = EXCLUDED.version,
                updated_at = now()
            WHERE products.version < EXCLUDED.version
            RETURNING true""",
        p.id,
        p.merchant_id,
        p.title,
        p.description,
        p.image_url,
        p.price_minor,
        p.currency,
        p.stock_available,
        p.status,
        p.version,
    )
    return bool(stored)


# --- tweets ----------------------------------------------------------------------------


async def insert_tweet(
    conn: asyncpg.Connection, t: Tweet, posted_price_minor: int | None, posted_currency: str | None
) -> None:
    await conn.execute(
        """INSERT INTO tweets (id, merchant_id, text, product_id, posted_price_minor, posted_currency, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        t.id,
        t.merchant_id,
        t.text,
        t.product_id,
        posted_price_minor,
        posted_currency,
        t.created_at,
    )


async def get_tweet_view(conn: asyncpg.Connection, tweet_id: uuid.UUID) -> TweetView | None:
    row = await conn.fetchrow(_TWEET_VIEW_SELECT + " WHERE t.id = $1", tweet_id)
    return _tweet_view(row) if row else None


async def timeline(
    conn: asyncpg.Connection,
    *,
    limit: int,
    after: Cursor | None = None,
    merchant_ids: Sequence[uuid.UUID] | None = None,
    followed_by: str | None = None,
) -> list[TweetView]:
    """Up to ``limit`` tweets, newest first, strictly after ``after``.

    Only ``merchant_ids``' tweets when given; only the tweets of the merchants ``followed_by`` follows when given.
    """
    conditions: list[str] = []
    args: list[Any] = []
    if after is not None:
        args += [after.created_at, after.tweet_id]
        conditions.append(f"(t.created_at, t.id) < (${len(args) - 1}, ${len(args)})")
    if merchant_ids is not None:
        args.append(list(merchant_ids))
        conditions.append(f"t.merchant_id = ANY(${len(args)}::uuid[])")
    if followed_by is not None:
        # A subquery, not a list of ids fetched first: one round trip whatever the number of follows.
        args.append(followed_by)
        conditions.append(f"t.merchant_id IN (SELECT f.merchant_id FROM follows f WHERE f.buyer_id = ${len(args)})")
    args.append(limit)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = await conn.fetch(
        f"{_TWEET_VIEW_SELECT}{where} ORDER BY t.created_at DESC, t.id DESC LIMIT ${len(args)}", *args
    )
    return [_tweet_view(r) for r in rows]


# --- follows ---------------------------------------------------------------------------


async def insert_follow(conn: asyncpg.Connection, buyer_id: str, merchant_id: uuid.UUID) -> bool:
    """Record that ``buyer_id`` follows ``merchant_id``; False when it already did."""
    inserted = await conn.fetchval(
        """INSERT INTO follows (buyer_id, merchant_id) VALUES ($1, $2)
           ON CONFLICT (buyer_id, merchant_id) DO NOTHING RETURNING true""",
        buyer_id,
        merchant_id,
    )
    return bool(inserted)


async def delete_follow(conn: asyncpg.Connection, buyer_id: str, merchant_id: uuid.UUID) -> bool:
    """Forget that ``buyer_id`` follows ``merchant_id``; False when it did not."""
    deleted = await conn.fetchval(
        "DELETE FROM follows WHERE buyer_id = $1 AND merchant_id = $2 RETURNING true", buyer_id, merchant_id
    )
    return bool(deleted)


async def follows_of(conn: asyncpg.Connection, buyer_id: str, *, merchant_id: uuid.UUID | None = None) -> list[Follow]:
    """The merchants ``buyer_id`` follows (only ``merchant_id`` when given), most recently followed first."""
    rows = await conn.fetch(
        """SELECT f.merchant_id, f.created_at, m.handle, m.name
           FROM follows f JOIN merchants m ON m.id = f.merchant_id
           WHERE f.buyer_id = $1 AND ($2::uuid IS NULL OR f.merchant_id = $2)
           ORDER BY f.created_at DESC, f.merchant_id""",
        buyer_id,
        merchant_id,
    )
    return [Follow(buyer_id, Merchant(r["merchant_id"], r["handle"], r["name"]), r["created_at"]) for r in rows]
