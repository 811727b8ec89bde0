"""The only SQL of feed: `$n` parameters, explicit columns, rows turned into domain objects at once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from tweetshop_platform import read_models

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

# The read models of catalog's topics, by the platform's rules (newest version wins; a rotated key wins).
_PRODUCTS = read_models.NewestVersionWins("products", key="id", columns=_PRODUCT_COLUMNS.split(", "))
_MERCHANT_KEYS = read_models.KeyVerifiers("merchants", key="id", key_hash="api_key_hash", details=("handle", "name"))


async def upsert_merchant(conn: asyncpg.Connection, m: Merchant, api_key_hash: str | None = None) -> None:
    """Record a merchant (a redelivered event rewrites the same values).

    A key hash from the registration is taken only while none is stored: a rotation wins over it, even one
    that arrived first.
    """
    await _MERCHANT_KEYS.register(conn, m.id, api_key_hash, {"handle": m.handle, "name": m.name})


async def set_merchant_key_hash(conn: asyncpg.Connection, merchant_id: uuid.UUID, api_key_hash: str) -> None:
    """The merchant's new key (MerchantApiKeyRotated); before its registration, the row has the key alone."""
    await _MERCHANT_KEYS.rotate(conn, merchant_id, api_key_hash)


async def get_merchant_key_hash(conn: asyncpg.Connection, merchant_id: uuid.UUID) -> str | None:
    found: str | None = await conn.fetchval("SELECT api_key_hash FROM merchants WHERE id = $1", merchant_id)
    return found


async def get_merchant(conn: asyncpg.Connection, merchant_id: uuid.UUID) -> Merchant | None:
    """The merchant, once its registration has arrived (a row with only a rotated key is not one yet)."""
    row = await conn.fetchrow(
        "SELECT id, handle, name FROM merchants WHERE id = $1 AND handle IS NOT NULL", merchant_id
    )
    return Merchant(**dict(row.items())) if row else None


async def get_product(conn: asyncpg.Connection, product_id: uuid.UUID) -> Product | None:
    """Feed's copy of one product."""
    row = await conn.fetchrow(f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE id = $1", product_id)
    return _product(row) if row else None


async def upsert_product_if_newer(conn: asyncpg.Connection, p: Product) -> bool:
    """Store ``p`` unless a version at least as new is stored already; True when it was stored.

    The version guard is in the statement itself, so two writers racing on a new product cannot let
    the older state win either.
    """
    return await _PRODUCTS.upsert(conn, p)


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
           FROM follows f JOIN merchants m ON m.id = f.merchant_id AND m.handle IS NOT NULL
           WHERE f.buyer_id = $1 AND ($2::uuid IS NULL OR f.merchant_id = $2)
           ORDER BY f.created_at DESC, f.merchant_id""",
        buyer_id,
        merchant_id,
    )
    return [Follow(buyer_id, Merchant(r["merchant_id"], r["handle"], r["name"]), r["created_at"]) for r in rows]
