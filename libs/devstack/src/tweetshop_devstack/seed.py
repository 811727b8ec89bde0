"""Demo data through the public HTTP APIs: merchant "Fancy", its products, buyable tweets and one plain tweet.

python -m tweetshop_devstack.seed [--catalog-url http://localhost:8001] [--feed-url http://localhost:8002]
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

MERCHANT_HANDLE = "fancy"
MERCHANT_NAME = "Fancy"

# (title, price in EUR cents, stock, the tweet that sells it)
PRODUCTS: tuple[tuple[str, int, int, str], ...] = (
    ("Cloud Runner sneakers, white", 8900, 25, "Our Cloud Runners are back in white. Tap Buy, they ship tomorrow."),
    ("Midnight hoodie", 5900, 40, "The Midnight hoodie: heavyweight cotton, made to last."),
    ("Canvas weekender tote", 3900, 60, "A tote that fits a weekend. Buy it right here."),
    ("Signed poster (limited)", 2500, 3, "Only 3 signed posters. First come, first served."),
)
PLAIN_TWEET = "Thanks for 10k followers! New drops every Friday."

# feed reads a new merchant or product from catalog's topics a moment after catalog answers; until then it answers
# 503 with Retry-After, followed this long at most.
PRODUCT_PROPAGATION_TIMEOUT_S = 30.0

JsonId = str | int


class SeedError(RuntimeError):
    """The demo data could not be created; the message says which call failed and what it answered."""


@dataclass
class SeedResult:
    """Ids of the demo data, kept in ``.run/seed.json`` after every step so an interrupted seed can resume."""

    merchant_id: JsonId
    merchant_handle: str
    api_key: str
    product_ids: list[JsonId] = field(default_factory=list)
    tweet_ids: list[JsonId] = field(default_factory=list)
    buyable_tweets: list[dict[str, JsonId]] = field(default_factory=list)  # [{tweet_id, product_id}]
    plain_tweet_id: JsonId | None = None
    complete: bool = False


def _fail(what: str, response: httpx.Response) -> SeedError:
    return SeedError(
        f"{what}: {response.request.method} {response.request.url} answered {response.status_code}: "
        f"{response.text[:500]}"
    )


def following_retry_after(send: Callable[[], httpx.Response], timeout: float) -> httpx.Response:
    """``send()``, sent again after each Retry-After that a 503 answer asks for, for ``timeout`` seconds at most:
    the first other answer, or the last 503.

    What a client of feed does right after catalog created a merchant or a product: feed answers 503
    (``merchant_not_yet_known``, ``product_not_yet_known``) with Retry-After until it has read it from catalog's
    topics, which takes well under a second.
    """
    deadline = time.monotonic() + timeout
    while True:
        response = send()
        wait = retry_after_s(response)
        if wait is None or time.monotonic() + wait > deadline:
            return response
        time.sleep(wait)


def retry_after_s(response: httpx.Response) -> int | None:
    """The seconds a 503's Retry-After asks to wait (whole seconds, as tweetshop sends it); None otherwise."""
    value = response.headers.get("retry-after", "")
    return int(value) if response.status_code == 503 and value.isascii() and value.isdigit() else None


def _post_tweet(feed: httpx.Client, body: dict[str, Any], headers: dict[str, str], timeout: float) -> dict[str, Any]:
    response = following_retry_after(lambda: feed.post("/tweets", json=body, headers=headers), timeout)
    if response.status_code != 201:
        raise _fail(f"posting tweet {body['text']!r}", response)
    created: dict[str, Any] = response.json()
    return created


def _save(result: SeedResult, state_file: Path) -> None:
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(result), indent=2) + "\n")
    tmp.replace(state_file)


def seed(
    catalog_url: str,
    feed_url: str,
    state_file: Path,
    *,
    say: Callable[[str], None] = print,
    propagation_timeout: float = PRODUCT_PROPAGATION_TIMEOUT_S,
    transport: httpx.BaseTransport | None = None,
) -> SeedResult | None:
    """Create the demo data (or finish an interrupted seed); None when an earlier run already did it all."""
    saved = load_seed(state_file)
    with (
        httpx.Client(base_url=catalog_url, timeout=10.0, transport=transport) as catalog,
        httpx.Client(base_url=feed_url, timeout=10.0, transport=transport) as feed,
    ):
        response = catalog.post("/merchants", json={"handle": MERCHANT_HANDLE, "name": MERCHANT_NAME})
        if response.status_code == 201:
            merchant = response.json()
            result = SeedResult(merchant["id"], merchant["handle"], merchant["api_key"])
            _save(result, state_file)
        elif response.status_code == 409:
            if saved is not None and saved.complete:
                say(f'merchant "{MERCHANT_HANDLE}" already exists: demo data was seeded before, skipping')
                return None
            if saved is None:
                # Its API key is answered only once: without our notes we cannot act for the merchant.
                say(f'merchant "{MERCHANT_HANDLE}" exists but {state_file} does not: skipping the seed')
                return None
            say(f"finishing the demo data an earlier run started ({state_file})")
            result = saved
        else:
            raise _fail("creating the merchant", response)
        auth = {"Authorization": f"Bearer {result.api_key}"}

        for index, (title, price_minor, stock, text) in enumerate(PRODUCTS):
            if index >= len(result.product_ids):
                body = {
                    "merchant_id": result.merchant_id,
                    "title": title,
                    "price_minor": price_minor,
                    "currency": "EUR",
                    "stock": stock,
                }
                response = catalog.post("/products", json=body, headers=auth)
                if response.status_code != 201:
                    raise _fail(f"creating product {title!r}", response)
                result.product_ids.append(response.json()["id"])
                _save(result, state_file)
            if index >= len(result.buyable_tweets):
                product_id = result.product_ids[index]
                body = {"merchant_id": result.merchant_id, "text": text, "product_id": product_id}
                tweet = _post_tweet(feed, body, auth, propagation_timeout)
                result.tweet_ids.append(tweet["id"])
                result.buyable_tweets.append({"tweet_id": tweet["id"], "product_id": product_id})
                _save(result, state_file)

        if result.plain_tweet_id is None:
            tweet = _post_tweet(
                feed, {"merchant_id": result.merchant_id, "text": PLAIN_TWEET}, auth, propagation_timeout
            )
            result.plain_tweet_id = tweet["id"]
            result.tweet_ids.append(tweet["id"])
        result.complete = True
        _save(result, state_file)

    say(
        f"seeded merchant {MERCHANT_NAME!r}, {len(result.product_ids)} products, {len(result.tweet_ids)} tweets "
        f"(ids in {state_file})"
    )
    return result


def load_seed(state_file: Path) -> SeedResult | None:
    """The ids an earlier seed saved, if any."""
    try:
        return SeedResult(**json.loads(state_file.read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


# Where the demo buyer, the tests and the benchmark ship to: central Paris.
PARIS = {
    "name": "Ada Lovelace",
    "line1": "1 Rue de Rivoli",
    "city": "Paris",
    "country": "FR",
    "lat": 48.86,
    "lon": 2.35,
}


def order_body(
    tweet_id: object,
    product_id: object,
    *,
    quantity: int = 1,
    buyer_id: str = "buyer-1",
    email: str = "ada@example.com",
    payment_method: str = "pm_card_visa",
    shipping: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``POST /orders`` body: buy ``quantity`` of a product through its tweet, shipped to ``shipping`` (Paris)."""
    return {
        "tweet_id": str(tweet_id),
        "product_id": str(product_id),
        "quantity": quantity,
        "buyer": {"id": buyer_id, "email": email},
        "shipping": dict(shipping or PARIS),
        "payment_method": payment_method,
    }


def buy_curl(result: SeedResult, checkout_url: str = "http://localhost:8003") -> str:
    """A ready-to-paste curl that buys the first seeded product through its tweet."""
    first = result.buyable_tweets[0]
    body = order_body(
        first["tweet_id"],
        first["product_id"],
        buyer_id="buyer-ada",
        shipping={**PARIS, "line1": "12 Rue de Rivoli", "lat": 48.8557, "lon": 2.3600},
    )
    return (
        f"curl -sS -X POST {checkout_url}/orders \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        "  -H \"Idempotency-Key: $(python3 -c 'import uuid; print(uuid.uuid4())')\" \\\n"
        f"  -d {shlex.quote(json.dumps(body))}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Seed a running stack and print the curl that buys."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog-url", default="http://localhost:8001")
    parser.add_argument("--feed-url", default="http://localhost:8002")
    parser.add_argument("--checkout-url", default="http://localhost:8003")
    parser.add_argument("--state-file", type=Path, default=Path(".run/seed.json"))
    args = parser.parse_args(argv)
    try:
        result = seed(args.catalog_url, args.feed_url, args.state_file) or load_seed(args.state_file)
    except (SeedError, httpx.HTTPError) as exc:
        print(f"seed failed: {exc}")
        return 1
    if result is not None and result.buyable_tweets:
        print("buy the first product:\n" + buy_curl(result, args.checkout_url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
