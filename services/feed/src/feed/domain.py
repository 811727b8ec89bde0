"""Feed rules: tweet text, which product a tweet may carry, what is not known yet, read-model versions, timeline
cursors. Pure, no I/O."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from tweetshop_platform.cursors import decode_keyset, encode_keyset
from tweetshop_platform.errors import Conflict, DomainError, Forbidden, NotFound, Unauthorized, Unprocessable

TWEET_MAX_CHARS = 280
BUYER_ID_MAX_CHARS = 200
# Visible ASCII only: a buyer id travels in URLs (`?buyer_id=`) and logs, so no spaces or control characters.
BUYER_ID_PATTERN = rf"^[\x21-\x7e]{{1,{BUYER_ID_MAX_CHARS}}}$"  # as documented in the OpenAPI document
_BUYER_ID = re.compile(BUYER_ID_PATTERN)
ProductStatus = Literal["active", "delisted"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Merchant:
    """What feed knows of a merchant (from catalog.merchants.v1)."""

    id: uuid.UUID
    handle: str
    name: str


@dataclass(frozen=True)
class Product:
    """Feed's copy of a product's latest known state (from catalog.products.v1)."""

    id: uuid.UUID
    merchant_id: uuid.UUID
    title: str
    description: str
    image_url: str | None
    price_minor: int
    currency: str
    stock_available: int
    status: ProductStatus
    version: int

    @property
    def in_stock(self) -> bool:
        """At least one unit can be bought right now."""
        return self.stock_available > 0

    @property
    def buyable(self) -> bool:
        """A buyer can tap Buy: the product is on sale and in stock."""
        return self.status == "active" and self.in_stock


@dataclass(frozen=True)
class Tweet:
    """A tweet as stored; ``product_id`` is set on buyable tweets only."""

    id: uuid.UUID
    merchant_id: uuid.UUID
    text: str
    product_id: uuid.UUID | None
    created_at: datetime


@dataclass(frozen=True)
class TweetView:
    """A tweet joined at read time with what feed knows now of its merchant and product."""

    tweet: Tweet
    merchant: Merchant | None
    product: Product | None

    @property
    def buyable(self) -> bool:
        """The tweet carries a product that can be bought right now."""
        return self.product is not None and self.product.buyable


@dataclass(frozen=True)
class Follow:
    """A buyer follows a merchant: the merchant's tweets appear on the buyer's timeline."""

    buyer_id: str
    merchant: Merchant
    followed_at: datetime


# --- rules -----------------------------------------------------------------------------


def check_text(text: str) -> str:
    """The tweet text as it will be stored, or 422: 1 to 280 characters, not blank, valid Unicode without NUL."""
    if not text.strip():
        raise Unprocessable("a tweet needs some text", code="invalid_text")
    if len(text) > TWEET_MAX_CHARS:
        raise Unprocessable(
            f"a tweet has at most {TWEET_MAX_CHARS} characters, this one has {len(text)}", code="invalid_text"
        )
    if "\x00" in text:
        # Postgres text cannot hold NUL; refusing here keeps it a clear 422 instead of a database error.
        raise Unprocessable("tweet text cannot contain NUL characters", code="invalid_text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: Postgres could not store it either
        raise Unprocessable("tweet text must be valid Unicode", code="invalid_text") from exc
    return text


def check_product_for_tweet(
    product: Product | None, product_id: uuid.UUID, merchant_id: uuid.UUID, now: datetime
) -> Product:
    """The product a merchant may attach to a tweet: known to feed, the merchant's own, and on sale.

    One feed does not know is "not yet known" (503 with Retry-After) while its id says catalog listed it moments
    ago (``born_moments_ago``), and unknown (404) otherwise.
    """
    if product is None:
        if born_moments_ago(product_id, now):
            raise NotYetKnown(
                f"feed does not know product {product_id} yet: if it was listed moments ago, catalog's event is on "
                f"its way; retry after {RETRY_AFTER_S} s (Retry-After)",
                code="product_not_yet_known",
            )
        raise NotFound(f"product {product_id} is not known to feed", code="unknown_product")
    if product.merchant_id != merchant_id:
        raise Forbidden("a merchant can only tweet its own products", code="product_of_another_merchant")
    if product.status != "active":
        raise Conflict("this product is no longer on sale", code="product_not_on_sale", product_status=product.status)
    return product


def merchant_not_known(merchant_id: uuid.UUID, now: datetime) -> DomainError:
    """The answer for a merchant feed does not know: "not yet known" (503 with Retry-After) while its id says
    catalog registered it moments ago (``born_moments_ago``), 404 ``unknown_merchant`` otherwise."""
    if born_moments_ago(merchant_id, now):
        return NotYetKnown(
            f"feed does not know merchant {merchant_id} yet: if it was registered moments ago, catalog's event is on "
            f"its way; retry after {RETRY_AFTER_S} s (Retry-After)",
            code="merchant_not_yet_known",
        )
    return NotFound(f"merchant {merchant_id} is not known to feed", code="unknown_merchant")


def check_buyer_id(buyer_id: str) -> str:
    """The buyer id as given, or 422: 1 to 200 visible ASCII characters (the buyer's opaque id)."""
    if not _BUYER_ID.fullmatch(buyer_id):
        raise Unprocessable(
            f"buyer_id must be 1 to {BUYER_ID_MAX_CHARS} visible ASCII characters (no spaces)", code="invalid_buyer_id"
        )
    return buyer_id


# --- buyer accounts (checkout.buyers.v1) -------------------------------------------------------------------
#
# A buyer account's id is ``ba_`` and 32 hex digits; its follows are reached only with one of its credentials
# (``Authorization: Bearer tsb_...``), checked against the hashes checkout publishes. A buyer id that is not an
# account's (the anonymous ids browsers made before accounts) keeps working without a credential, as before.

BUYER_ACCOUNT_PREFIX = "ba_"
CREDENTIAL_PREFIX = "tsb_"
# checkout's credentials carry their birth: ``tsb_<12 hex digits: Unix milliseconds>.<43 random characters>``.
_BORN_CREDENTIAL = re.compile(r"^tsb_([0-9a-f]{12})\.[A-Za-z0-9_-]{43}$")


def is_account_buyer_id(buyer_id: str) -> bool:
    """An account's id (or one posing as one): never usable without the account's credential."""
    return buyer_id.startswith(BUYER_ACCOUNT_PREFIX)


def credential_born_ms(credential: str) -> int | None:
    """When checkout minted a credential, in Unix milliseconds, as the credential says; None for a credential of
    the first form (no birth) or anything else. Said by whoever made the string: only ever used to choose between
    "not known yet" (503) and "unknown" (401), never to let anyone in."""
    found = _BORN_CREDENTIAL.match(credential)
    return int(found.group(1), 16) if found else None


def credential_born_moments_ago(credential: str, now: datetime) -> bool:
    """The credential says it was minted within NOT_YET_KNOWN_WINDOW before ``now`` (or at most CLOCK_SKEW after):
    its BuyerCredentialIssued may still be on its way (the same window as catalog's new ids)."""
    born_ms = credential_born_ms(credential)
    if born_ms is None:
        return False
    now_ms = (now - _EPOCH) // timedelta(milliseconds=1)
    return now_ms - _WINDOW_MS <= born_ms <= now_ms + _SKEW_MS


def buyer_credential_not_known(credential: str, now: datetime) -> DomainError:
    """The answer for a buyer credential feed has no verifier of: "not yet known" (503 with Retry-After) while it
    says checkout minted it moments ago, 401 ``invalid_buyer_credential`` otherwise."""
    if credential_born_moments_ago(credential, now):
        return NotYetKnown(
            "feed does not know this buyer credential yet: if it was issued moments ago, checkout's event is on its "
            f"way; retry after {RETRY_AFTER_S} s (Retry-After)",
            code="buyer_credential_not_yet_known",
        )
    return invalid_buyer_credential()


def invalid_buyer_credential() -> Unauthorized:
    return Unauthorized(
        "unknown, revoked or deleted buyer credential: sign in again (checkout's POST /buyers or a link code)",
        code="invalid_buyer_credential",
    )


def supersedes(incoming_version: int, current_version: int | None) -> bool:
    """A product event replaces the read model only when it is newer: replays and late arrivals never win."""
    return current_version is None or incoming_version > current_version


# --- what catalog created a moment ago ----------------------------------------------------
#
# feed learns merchants and products from catalog's topics, a moment after catalog answered POST /merchants or
# POST /products (its outbox relay publishes, feed's consumer reads: under a second). A client that uses the new
# id at once must be told to retry, not that the id is unknown. Catalog mints those ids as UUIDv7 (RFC 9562:
# the first 48 bits are the id's birth, in Unix milliseconds), so the id alone tells feed whether it can be that
# young: no lookup, no wait, nothing held per request. A forged id with a fresh timestamp gets only the same 503
# a genuine one gets (feed cannot tell them apart either, so the answer says nothing about what exists), and
# only for NOT_YET_KNOWN_WINDOW; any other id feed does not know is unknown (404), as before.

NOT_YET_KNOWN_WINDOW = timedelta(seconds=60)  # far above the usual lag; a longer one is an alert of its own
CLOCK_SKEW = timedelta(seconds=5)  # catalog's clock may run a little ahead of feed's
RETRY_AFTER_S = 1  # the usual lag is well under a second; Retry-After counts whole seconds
_WINDOW_MS = NOT_YET_KNOWN_WINDOW // timedelta(milliseconds=1)
_SKEW_MS = CLOCK_SKEW // timedelta(milliseconds=1)


class NotYetKnown(DomainError):
    """503 with ``Retry-After``: the request names a merchant or product catalog may have created moments ago,
    which feed has not read from catalog's topics yet. A client retries after ``retry_after_s`` seconds."""

    status = 503
    code = "not_yet_known"

    def __init__(self, message: str, *, code: str, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(message, code=code, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s


def uuid7_unix_ms(value: uuid.UUID) -> int | None:
    """When a UUIDv7 was minted, in Unix milliseconds (its first 48 bits); None for any other kind of UUID.

    An integer, not a datetime: a forged id may carry any 48-bit timestamp, past what a datetime can hold.
    """
    if value.version != 7:  # None for a UUID that is not of RFC 9562's variant
        return None
    return value.int >> 80


def born_moments_ago(value: uuid.UUID, now: datetime) -> bool:
    """The id is a UUIDv7 minted within NOT_YET_KNOWN_WINDOW before ``now`` (or at most CLOCK_SKEW after it)."""
    born_ms = uuid7_unix_ms(value)
    if born_ms is None:
        return False
    now_ms = (now - _EPOCH) // timedelta(milliseconds=1)
    return now_ms - _WINDOW_MS <= born_ms <= now_ms + _SKEW_MS


# --- timeline cursors ------------------------------------------------------------------

_CURSOR_PREFIX = "t1"


@dataclass(frozen=True, order=True)
class Cursor:
    """Position in the timeline: the last tweet seen; the next page starts strictly after it."""

    created_at: datetime
    tweet_id: uuid.UUID


def encode_cursor(cursor: Cursor) -> str:
    """An opaque, URL-safe string for a position (``tweetshop_platform.cursors``)."""
    return encode_keyset(_CURSOR_PREFIX, cursor.created_at, cursor.tweet_id)


def decode_cursor(value: str) -> Cursor:
    """The position an ``encode_cursor`` string stands for, or 422 when it is not one."""
    return Cursor(*decode_keyset(_CURSOR_PREFIX, value))
