"""Feed's pure rules: read-model versions, timeline cursors, tweet text, which product a tweet may carry."""

from __future__ import annotations

import base64
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from feed import domain
from feed.api import TweetIn, TweetOut
from feed.domain import Cursor, Merchant, Product, Tweet, TweetView
from pydantic import ValidationError
from tweetshop_platform.errors import DomainError

MERCHANT = uuid.uuid4()
NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


def uuid7_at(moment: datetime) -> uuid.UUID:
    """A UUIDv7 (RFC 9562) minted at ``moment``, as catalog mints merchant and product ids."""
    unix_ms = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    return uuid7_with_ms(unix_ms)


def uuid7_with_ms(unix_ms: int) -> uuid.UUID:
    """A UUIDv7 with any 48-bit timestamp, as a forger may send one; the other bits random."""
    value = (unix_ms << 80) | (uuid.uuid4().int & ((1 << 80) - 1))
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return uuid.UUID(int=value)


def a_product(**changes: object) -> Product:
    product = Product(
        id=uuid.uuid4(),
        merchant_id=MERCHANT,
        title="Fancy mug",
        description="",
        image_url=None,
        price_minor=1200,
        currency="EUR",
        stock_available=3,
        status="active",
        version=1,
    )
    return replace(product, **changes)  # type: ignore[arg-type]


def refusal(call: object) -> DomainError:
    """The domain error a call raises."""
    assert callable(call)
    with pytest.raises(DomainError) as caught:
        call()
    return caught.value


# --- the read-model version rule ----------------------------------------------------------


def test_a_product_event_for_an_unknown_product_is_applied() -> None:
    assert domain.supersedes(1, None)


def test_a_newer_version_replaces_the_stored_one() -> None:
    assert domain.supersedes(3, 2)


def test_a_replayed_event_of_the_stored_version_does_not_apply_again() -> None:
    assert not domain.supersedes(2, 2)


def test_an_older_version_arriving_late_never_wins_over_a_newer_one() -> None:
    assert not domain.supersedes(1, 5)


# --- cursors ------------------------------------------------------------------------------


def test_a_cursor_round_trips_to_the_exact_microsecond() -> None:
    cursor = Cursor(datetime(2025, 11, 25, 12, 30, 1, 123456, tzinfo=UTC), uuid.uuid4())
    assert domain.decode_cursor(domain.encode_cursor(cursor)) == cursor


def test_a_cursor_from_another_timezone_means_the_same_instant() -> None:
    instant = datetime(2025, 11, 25, 13, 30, tzinfo=UTC)
    local = instant.astimezone(timezone(timedelta(hours=2)))
    tweet_id = uuid.uuid4()
    assert domain.decode_cursor(domain.encode_cursor(Cursor(local, tweet_id))).created_at == instant


def test_a_cursor_is_opaque_and_url_safe() -> None:
    tweet_id = uuid.uuid4()
    encoded = domain.encode_cursor(Cursor(datetime(2025, 1, 1, tzinfo=UTC), tweet_id))
    assert str(tweet_id) not in encoded and tweet_id.hex not in encoded
    assert all(c.isalnum() or c in "-_" for c in encoded)


def b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not-a-cursor",
        "!!!!",
        b64("t1:123:nothex"),
        b64("x1:123:" + "0" * 32),
        b64("t1:99999999999999999999:" + "0" * 32),
        "a" * 201,
    ],
)
def test_a_malformed_cursor_is_refused_with_422(bad: str) -> None:
    error = refusal(lambda: domain.decode_cursor(bad))
    assert (error.status, error.code) == (422, "invalid_cursor")


# --- tweet text ---------------------------------------------------------------------------


def test_text_of_280_characters_is_accepted_and_kept_as_written() -> None:
    text = "🛍" * 280
    assert domain.check_text(text) == text


@pytest.mark.parametrize("text", ["", "   \n\t", "x" * 281, "bad\x00byte", "lone \ud800 surrogate"])
def test_blank_too_long_or_nul_text_is_refused_with_422(text: str) -> None:
    error = refusal(lambda: domain.check_text(text))
    assert (error.status, error.code) == (422, "invalid_text")


def test_the_request_body_refuses_bad_text_unknown_fields_and_bad_ids() -> None:
    merchant = str(uuid.uuid4())
    for body in (
        {"merchant_id": merchant, "text": "  "},
        {"merchant_id": merchant, "text": "x" * 281},
        {"merchant_id": merchant, "text": "hi", "price": 1},
        {"merchant_id": "fancy", "text": "hi"},
        {"merchant_id": merchant, "text": "hi", "product_id": "mug"},
    ):
        with pytest.raises(ValidationError):
            TweetIn.model_validate(body)
    assert TweetIn.model_validate({"merchant_id": merchant, "text": "hi"}).product_id is None


# --- which product a tweet may carry ------------------------------------------------------


def test_an_unknown_product_listed_moments_ago_asks_the_caller_to_retry() -> None:
    product_id = uuid7_at(NOW - timedelta(milliseconds=300))
    error = refusal(lambda: domain.check_product_for_tweet(None, product_id, MERCHANT, NOW))
    assert isinstance(error, domain.NotYetKnown)
    assert (error.status, error.code, error.retry_after_s) == (503, "product_not_yet_known", 1)
    assert error.details == {"retry_after_s": 1}


def test_an_unknown_product_that_is_not_new_is_not_found() -> None:
    for product_id in (uuid.uuid4(), uuid7_at(NOW - timedelta(minutes=5))):
        error = refusal(lambda product_id=product_id: domain.check_product_for_tweet(None, product_id, MERCHANT, NOW))
        assert (error.status, error.code) == (404, "unknown_product")


def test_a_merchant_cannot_tweet_another_merchants_product() -> None:
    product = a_product(merchant_id=uuid.uuid4())
    error = refusal(lambda: domain.check_product_for_tweet(product, product.id, MERCHANT, NOW))
    assert (error.status, error.code) == (403, "product_of_another_merchant")


def test_a_delisted_product_cannot_be_tweeted() -> None:
    product = a_product(status="delisted")
    error = refusal(lambda: domain.check_product_for_tweet(product, product.id, MERCHANT, NOW))
    assert (error.status, error.code) == (409, "product_not_on_sale")


def test_a_sold_out_product_can_still_be_tweeted() -> None:
    product = a_product(stock_available=0)
    assert domain.check_product_for_tweet(product, product.id, MERCHANT, NOW) == product


# --- the live card ------------------------------------------------------------------------


def view_of(product: Product | None) -> TweetView:
    tweet = Tweet(uuid.uuid4(), MERCHANT, "new mug!", product.id if product else None, datetime.now(UTC))
    return TweetView(tweet, Merchant(MERCHANT, "fancy", "Fancy"), product)


def test_a_tweet_with_an_active_product_in_stock_is_buyable() -> None:
    out = TweetOut.of(view_of(a_product()))
    assert out.buyable and out.product is not None and out.product.in_stock and out.product.buyable
    assert out.merchant is not None and out.merchant.handle == "fancy"


def test_a_sold_out_product_keeps_its_card_but_cannot_be_bought() -> None:
    out = TweetOut.of(view_of(a_product(stock_available=0, price_minor=900)))
    assert out.product is not None and (out.product.price_minor, out.product.currency) == (900, "EUR")
    assert not out.buyable and not out.product.in_stock and not out.product.buyable


def test_a_delisted_product_keeps_its_card_but_cannot_be_bought() -> None:
    out = TweetOut.of(view_of(a_product(status="delisted")))
    assert out.product is not None and out.product.in_stock
    assert not out.buyable and not out.product.buyable


def test_a_plain_tweet_has_no_card_and_is_not_buyable() -> None:
    out = TweetOut.of(view_of(None))
    assert out.product is None and not out.buyable


# --- follows -------------------------------------------------------------------------------


@pytest.mark.parametrize("buyer_id", ["b", "buyer-42", "b_" + "x" * 198, "ada@example.com", "auth0|5f1c"])
def test_a_buyer_id_of_visible_characters_is_kept_as_given(buyer_id: str) -> None:
    assert domain.check_buyer_id(buyer_id) == buyer_id


@pytest.mark.parametrize("buyer_id", ["", " ", "has space", "tab\there", "x" * 201, "new\nline", "é", "ok\n"])
def test_a_blank_long_or_non_ascii_buyer_id_is_refused_with_422(buyer_id: str) -> None:
    error = refusal(lambda: domain.check_buyer_id(buyer_id))
    assert (error.status, error.code) == (422, "invalid_buyer_id")


# --- merchants and products catalog created moments ago ----------------------------------------


def test_uuid7_unix_ms_reads_the_birth_of_a_uuid7_and_nothing_from_other_uuids() -> None:
    born = uuid7_at(NOW)
    assert born.version == 7
    assert domain.uuid7_unix_ms(born) == int(NOW.timestamp() * 1000)
    assert domain.uuid7_unix_ms(uuid.uuid4()) is None
    assert domain.uuid7_unix_ms(uuid.uuid1()) is None
    # Version nibble 7 but not RFC 9562's variant (a Microsoft GUID, say): not a UUIDv7.
    not_rfc = uuid.UUID(int=born.int & ~(0x3 << 62))
    assert not_rfc.version is None and domain.uuid7_unix_ms(not_rfc) is None


def test_an_unknown_merchant_registered_moments_ago_is_not_yet_known_with_retry_after() -> None:
    merchant_id = uuid7_at(NOW - timedelta(milliseconds=500))

    error = domain.merchant_not_known(merchant_id, NOW)

    assert isinstance(error, domain.NotYetKnown)
    assert (error.status, error.code, error.retry_after_s) == (503, "merchant_not_yet_known", 1)
    assert error.details == {"retry_after_s": 1}
    assert str(merchant_id) in error.message


def test_the_not_yet_known_window_is_a_minute_back_and_a_little_clock_skew_ahead() -> None:
    window, skew = domain.NOT_YET_KNOWN_WINDOW, domain.CLOCK_SKEW
    ms = timedelta(milliseconds=1)
    for born, fresh in (
        (NOW, True),
        (NOW - window, True),
        (NOW - window - ms, False),
        (NOW + skew, True),  # catalog's clock a little ahead of feed's
        (NOW + skew + ms, False),
        (NOW - timedelta(days=365), False),
    ):
        assert domain.born_moments_ago(uuid7_at(born), NOW) is fresh, born
        expected = (503, "merchant_not_yet_known") if fresh else (404, "unknown_merchant")
        error = domain.merchant_not_known(uuid7_at(born), NOW)
        assert (error.status, error.code) == expected, born


def test_a_forged_merchant_id_gets_404_or_the_same_harmless_503_and_never_an_error() -> None:
    # Any UUID a client may send: random ones, and UUIDv7s with the smallest and the largest timestamps (the
    # largest is past what a datetime holds).
    for forged in (uuid.uuid4(), uuid.UUID(int=0), uuid.UUID(int=(1 << 128) - 1), uuid7_with_ms(0)):
        error = domain.merchant_not_known(forged, NOW)
        assert (error.status, error.code) == (404, "unknown_merchant"), forged
    far_future = domain.merchant_not_known(uuid7_with_ms((1 << 48) - 1), NOW)
    assert (far_future.status, far_future.code) == (404, "unknown_merchant")
    # A forged fresh id is told exactly what a genuine one is: the answer depends on the id and the clock only.
    one, other = uuid7_at(NOW), uuid7_at(NOW)
    assert domain.merchant_not_known(one, NOW).message.replace(str(one), "ID") == domain.merchant_not_known(
        other, NOW
    ).message.replace(str(other), "ID")


# --- buyer credentials: "not yet known" by the credential's birth ---------------------------------------------

_NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _born(at: datetime) -> str:
    born_ms = (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    return f"tsb_{born_ms:012x}." + "A" * 43


def test_a_credential_born_within_the_window_is_not_yet_known_and_any_other_is_unknown() -> None:
    assert domain.credential_born_ms(_born(_NOW)) == (_NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )
    fresh = domain.buyer_credential_not_known(_born(_NOW - timedelta(seconds=5)), _NOW)
    assert isinstance(fresh, domain.NotYetKnown) and fresh.code == "buyer_credential_not_yet_known"
    for credential in (
        _born(_NOW - domain.NOT_YET_KNOWN_WINDOW - timedelta(seconds=1)),  # too old
        _born(_NOW + domain.CLOCK_SKEW + timedelta(seconds=1)),  # from the future
        "tsb_" + "A" * 43,  # the first form: no birth
        "tsb_0000000000zz." + "A" * 43,  # not hex
        _born(_NOW)[:-1],  # too short
        "tsk_merchant-key",
    ):
        refused = domain.buyer_credential_not_known(credential, _NOW)
        assert refused.status == 401 and refused.code == "invalid_buyer_credential", credential


def test_only_account_ids_need_a_credential() -> None:
    assert domain.is_account_buyer_id("ba_" + "0" * 32)
    assert domain.is_account_buyer_id("ba_anything")  # posing as one is refused too
    assert not domain.is_account_buyer_id("b_3f1e6c1a-7b2d-4c5e-9a10-2b6f4d8e1c37")
