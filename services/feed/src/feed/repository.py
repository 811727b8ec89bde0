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


# --- buyer credential verifiers (checkout.buyers.v1) --------------------------------------------------------
#
# Facts about one hash each, so that any order of arrival ends in the same state: an issue never brings back a
# revoked hash or a deleted buyer, a revocation read before its issue is kept (the issue then changes nothing).


async def record_buyer_credential(conn: asyncpg.Connection, buyer_id: str, credential_sha256: str) -> bool:
    """A credential issued to ``buyer_id`` (BuyerCredentialIssued); False when it changed nothing (a replay, a
    hash revoked already, or a deleted buyer)."""
    inserted = await conn.fetchval(
        """INSERT INTO buyer_credentials (credential_sha256, buyer_id)
           SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM deleted_buyers WHERE buyer_id = $2)
           ON CONFLICT (credential_sha256) DO NOTHING RETURNING true""",
        credential_sha256,
        buyer_id,
    )
    return bool(inserted)


async def revoke_buyer_credentials(conn: asyncpg.Connection, buyer_id: str, hashes: Sequence[str]) -> None:
    """These credentials of ``buyer_id`` stop working for good (BuyerCredentialsRevoked), issued or not yet."""
    await conn.execute(
        """INSERT INTO buyer_credentials (credential_sha256, buyer_id, revoked)
           SELECT h, $1, true FROM unnest($2::text[]) AS h
           WHERE NOT EXISTS (SELECT 1 FROM deleted_buyers WHERE buyer_id = $1)
           ON CONFLICT (credential_sha256) DO UPDATE SET revoked = true, updated_at = now()""",
        buyer_id,
        list(hashes),
    )


async def delete_buyer(conn: asyncpg.Connection, buyer_id: str) -> int:
    """The buyer deleted the account (BuyerDeleted): remembered as deleted, its verifiers and follows gone; how many
    follows were erased."""
    await conn.execute("INSERT INTO deleted_buyers (buyer_id) VALUES ($1) ON CONFLICT DO NOTHING", buyer_id)
    await conn.execute("DELETE FROM buyer_credentials WHERE buyer_id = $1", buyer_id)
    erased = await conn.fetch("DELETE FROM follows WHERE buyer_id = $1 RETURNING 1", buyer_id)
    return len(erased)


async def buyer_of_credential(conn: asyncpg.Connection, credential_sha256: str) -> tuple[str, bool] | None:
    """The buyer a credential hash was issued to and whether it is revoked, or None when feed has no word of it."""
    row = await conn.fetchrow(
        "SELECT buyer_id, revoked FROM buyer_credentials WHERE credential_sha256 = $1", credential_sha256
    )
    return (row["buyer_id"], row["revoked"]) if row else None


async def is_deleted_buyer(conn: asyncpg.Connection, buyer_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM deleted_buyers WHERE buyer_id = $1", buyer_id))


async def adopt_follows(conn: asyncpg.Connection, anonymous_id: str, buyer_id: str) -> int:
    """The follows of a pre-account (anonymous) buyer id become the account's; how many moved."""
    moved = await conn.fetch(
        """WITH gone AS (DELETE FROM follows WHERE buyer_id = $1 RETURNING merchant_id, created_at)
           INSERT INTO follows (buyer_id, merchant_id, created_at) SELECT $2, merchant_id, created_at FROM gone
           ON CONFLICT (buyer_id, merchant_id) DO NOTHING RETURNING 1""",
        anonymous_id,
        buyer_id,
    )
    return len(moved)
