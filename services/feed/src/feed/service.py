"""Feed use cases: thin, transactional, each state change and its events committed together."""

from __future__ import annotations

import uuid

import asyncpg
import structlog
from tweetshop_contracts import (
    BuyableTweetPosted,
    BuyerCredentialIssued,
    BuyerCredentialsRevoked,
    BuyerDeleted,
    MerchantApiKeyRotated,
    MerchantRegistered,
    ProductListed,
    ProductUpdated,
    utc_now,
)
from tweetshop_platform import outbox
from tweetshop_platform.auth import hash_secret, secret_matches
from tweetshop_platform.errors import Forbidden, NotFound, Unauthorized, Unprocessable

from . import domain, metrics, repository
from .domain import Follow, Merchant, Product, Tweet, TweetView

PRODUCER = "feed"

log = structlog.get_logger(__name__)


async def authorize_merchant(conn: asyncpg.Connection, merchant_id: uuid.UUID, api_key: str) -> Merchant:
    """The merchant a tweet is posted as, if ``api_key`` is its key: 401 without one, 403 with another.

    Catalog issues the keys; feed holds only their SHA-256, announced on catalog.merchants.v1
    (MerchantRegistered, MerchantApiKeyRotated), so it never sees a key it did not receive in a request.
    A merchant feed has not read yet: 503 with Retry-After if it was registered moments ago, else 404
    (``domain.merchant_not_known``).
    """
    if not api_key:
        raise Unauthorized("missing credentials: send Authorization: Bearer <key>")
    merchant = await repository.get_merchant(conn, merchant_id)
    if merchant is None:
        raise domain.merchant_not_known(merchant_id, utc_now())
    expected = await repository.get_merchant_key_hash(conn, merchant_id)
    if expected is None or not secret_matches(api_key, expected):
        raise Forbidden("this key does not belong to the merchant (a rotated key stops working)")
    return merchant


async def post_tweet(
    pool: asyncpg.Pool,
    api_key: str,
    merchant_id: uuid.UUID,
    text: str,
    product_id: uuid.UUID | None,
    correlation_id: str,
) -> TweetView:
    """A merchant posts a tweet; with a product it is buyable and announced on feed.buyable-tweets.v1."""
    text = domain.check_text(text)
    async with pool.acquire() as conn, conn.transaction():
        merchant = await authorize_merchant(conn, merchant_id, api_key)
        product: Product | None = None
        if product_id is not None:
            product = domain.check_product_for_tweet(
                await repository.get_product(conn, product_id), product_id, merchant_id, utc_now()
            )
        tweet = Tweet(id=uuid.uuid4(), merchant_id=merchant_id, text=text, product_id=product_id, created_at=utc_now())
        await repository.insert_tweet(
            conn, tweet, product.price_minor if product else None, product.currency if product else None
        )
        if product is not None:
            await outbox.enqueue(
                conn,
                BuyableTweetPosted(
                    producer=PRODUCER,
                    correlation_id=correlation_id,
                    tweet_id=tweet.id,
                    merchant_id=merchant_id,
                    product_id=product.id,
                    text=text,
                    price_minor=product.price_minor,
                    currency=product.currency,
                    posted_at=tweet.created_at,
                ),
            )
    metrics.TWEETS_POSTED.labels("buyable" if product else "plain").inc()
    log.info("tweet posted", tweet_id=str(tweet.id), merchant_id=str(merchant_id), buyable=product is not None)
    return TweetView(tweet, merchant, product)


async def get_tweet(pool: asyncpg.Pool, tweet_id: uuid.UUID) -> TweetView:
    """One tweet with its live product card."""
    async with pool.acquire() as conn:
        view = await repository.get_tweet_view(conn, tweet_id)
    if view is None:
        raise NotFound("unknown tweet", code="unknown_tweet")
    return view


# --- whose follows: a buyer account's credential, or an anonymous id -----------------------------------------


async def authenticate_buyer(conn: asyncpg.Connection, credential: str) -> str:
    """The buyer account a credential belongs to: 401 when it is not a live one (unknown, revoked, deleted, or not
    a buyer credential), 503 with Retry-After when it says checkout minted it moments ago and its verifier has not
    arrived yet (``domain.buyer_credential_not_known``).

    Checkout issues the credentials; feed holds only their SHA-256 (checkout.buyers.v1), so it never sees a
    credential it did not receive in a request.
    """
    if not credential.startswith(domain.CREDENTIAL_PREFIX) or len(credential) > 200:
        raise domain.invalid_buyer_credential()
    found = await repository.buyer_of_credential(conn, hash_secret(credential))
    if found is None:
        raise domain.buyer_credential_not_known(credential, utc_now())
    buyer_id, revoked = found
    if revoked:
        raise domain.invalid_buyer_credential()
    return buyer_id


async def resolve_buyer(conn: asyncpg.Connection, credential: str | None, buyer_id: str | None) -> str:
    """Whose follows a request reads or changes.

    - With a buyer credential: its account's. ``buyer_id`` may be left out or be the account's own id; another
      account's id is 404 (``buyer_not_found``: whether it exists is private). An id that is not an account's is
      taken as this device's id from before it had an account: its follows join the account (once; it then has
      none), and the request is the account's.
    - Without one: ``buyer_id`` as given, the anonymous follows of before accounts, which still work for ids that
      are not an account's; an account's id (``ba_…``) without its credential is 401.
    """
    if credential is None:
        if buyer_id is None:
            raise Unauthorized(
                "name the buyer: a buyer credential (Authorization: Bearer tsb_...) or ?buyer_id=",
                code="buyer_required",
            )
        buyer_id = domain.check_buyer_id(buyer_id)
        if domain.is_account_buyer_id(buyer_id):
            raise Unauthorized(
                "a buyer account's follows need its credential: send Authorization: Bearer <buyer credential>",
                code="buyer_credential_required",
            )
        return buyer_id
    account = await authenticate_buyer(conn, credential)
    if buyer_id is None or buyer_id == account:
        return account
    buyer_id = domain.check_buyer_id(buyer_id)
    if domain.is_account_buyer_id(buyer_id):
        raise NotFound("no such buyer (or not yours)", code="buyer_not_found")
    moved = await repository.adopt_follows(conn, buyer_id, account)
    if moved:
        log.info("anonymous follows joined a buyer account", buyer_id=account, follows=moved)
    return account


async def timeline_page(
    pool: asyncpg.Pool,
    *,
    limit: int,
    cursor: str | None = None,
    merchant_id: uuid.UUID | None = None,
    buyer_id: str | None = None,
    credential: str | None = None,
) -> tuple[list[TweetView], str | None]:
    """One page of the timeline, newest first, and the cursor of the next page (None on the last one).

    Everyone's tweets by default; one merchant's with ``merchant_id``; the followed merchants' with ``buyer_id``
    (a buyer account's with its ``credential``: ``resolve_buyer``). A credential alone does not change the
    timeline: the web app sends one with every call.
    """
    if merchant_id is not None and buyer_id is not None:
        raise Unprocessable("pass merchant_id or buyer_id, not both", code="invalid_timeline_filter")
    if buyer_id is not None:
        domain.check_buyer_id(buyer_id)
        async with pool.acquire() as conn, conn.transaction():
            buyer_id = await resolve_buyer(conn, credential, buyer_id)
    after = domain.decode_cursor(cursor) if cursor is not None else None
    async with pool.acquire() as conn:
        # One row more than asked tells whether another page exists without a count query.
        views = await repository.timeline(
            conn,
            limit=limit + 1,
            after=after,
            merchant_ids=[merchant_id] if merchant_id else None,
            followed_by=buyer_id,
        )
    page = views[:limit]
    next_cursor = None
    if len(views) > limit:
        last = page[-1].tweet
        next_cursor = domain.encode_cursor(domain.Cursor(last.created_at, last.id))
    return page, next_cursor


# --- follows ---------------------------------------------------------------------------


async def follow(
    pool: asyncpg.Pool, buyer_id: str | None, merchant_id: uuid.UUID, credential: str | None = None
) -> tuple[Follow, bool]:
    """The buyer (``resolve_buyer``) follows ``merchant_id`` (idempotent); True when the follow is new."""
    async with pool.acquire() as conn, conn.transaction():
        buyer_id = await resolve_buyer(conn, credential, buyer_id)
        if await repository.get_merchant(conn, merchant_id) is None:
            raise domain.merchant_not_known(merchant_id, utc_now())
        created = await repository.insert_follow(conn, buyer_id, merchant_id)
        (found,) = await repository.follows_of(conn, buyer_id, merchant_id=merchant_id)
    metrics.FOLLOWS.labels("follow" if created else "already_following").inc()
    return found, created


async def unfollow(
    pool: asyncpg.Pool, buyer_id: str | None, merchant_id: uuid.UUID, credential: str | None = None
) -> bool:
    """The buyer (``resolve_buyer``) stops following ``merchant_id``; False when it did not follow it."""
    async with pool.acquire() as conn, conn.transaction():
        buyer_id = await resolve_buyer(conn, credential, buyer_id)
        removed = await repository.delete_follow(conn, buyer_id, merchant_id)
    metrics.FOLLOWS.labels("unfollow" if removed else "not_following").inc()
    return removed


async def following(
    pool: asyncpg.Pool, buyer_id: str | None, credential: str | None = None
) -> tuple[str, list[Follow]]:
    """The buyer (``resolve_buyer``) and the merchants it follows, most recently followed first."""
    async with pool.acquire() as conn, conn.transaction():
        buyer_id = await resolve_buyer(conn, credential, buyer_id)
        return buyer_id, await repository.follows_of(conn, buyer_id)


# --- read model of checkout.buyers.v1 ------------------------------------------------------------------------


async def record_buyer_credential(conn: asyncpg.Connection, event: BuyerCredentialIssued) -> None:
    """From now on this credential reaches its buyer's follows (unless it was revoked, or the buyer deleted,
    already: an issue read late never brings one back)."""
    await repository.record_buyer_credential(conn, event.buyer_id, event.credential_sha256)


async def revoke_buyer_credentials(conn: asyncpg.Connection, event: BuyerCredentialsRevoked) -> None:
    """These credentials stop working for good (signed out everywhere), even one whose issue is still to come."""
    await repository.revoke_buyer_credentials(conn, event.buyer_id, event.credential_sha256s)


async def erase_buyer(conn: asyncpg.Connection, event: BuyerDeleted) -> None:
    """The buyer deleted the account: its follows and verifiers go; feed keeps only that the opaque id is gone."""
    erased = await repository.delete_buyer(conn, event.buyer_id)
    log.info("deleted buyer erased", buyer_id=event.buyer_id, follows=erased)


# --- read models from catalog's topics -------------------------------------------------


async def record_merchant(conn: asyncpg.Connection, event: MerchantRegistered) -> None:
    """Remember a merchant's handle and name for posting and for the timeline, and the hash of its key."""
    await repository.upsert_merchant(conn, Merchant(event.merchant_id, event.handle, event.name), event.api_key_sha256)


async def record_key_rotation(conn: asyncpg.Connection, event: MerchantApiKeyRotated) -> None:
    """From now on only the merchant's new key posts for it.

    A rotation read before its registration (one parked on the dead-letter topic and redriven later, say) is
    still the newer word on the key: it is kept, and the registration adds the handle and name without bringing
    its older key back (``tweetshop_platform.read_models.KeyVerifiers``, the rule checkout follows too).
    """
    await repository.set_merchant_key_hash(conn, event.merchant_id, event.api_key_sha256)


async def apply_product_state(conn: asyncpg.Connection, event: ProductListed | ProductUpdated) -> bool:
    """Take a product's new state unless a newer version is already stored; True when it was taken."""
    incoming = Product(
        id=event.product_id,
        merchant_id=event.merchant_id,
        title=event.title,
        description=event.description,
        image_url=event.image_url,
        price_minor=event.price_minor,
        currency=event.currency,
        stock_available=event.stock_available,
        status=event.status,
        version=event.version,
    )
    applied = await repository.upsert_product_if_newer(conn, incoming)
    metrics.PRODUCT_EVENTS.labels("applied" if applied else "stale").inc()
    if not applied:
        log.info("stale product event skipped", product_id=str(incoming.id), version=incoming.version)
    return applied
