"""A new merchant's first tweet, sent the moment catalog answers: real catalog and feed processes, real broker
and Postgres.

feed learns merchants and products from catalog's topics a moment after catalog answered. Until then it answers
503 with Retry-After for an id catalog minted moments ago (UUIDv7: the id tells its birth), so a client that
follows Retry-After (the web app, ``curl --retry``) gets its 201 without ever seeing "unknown"; an id that is
not new stays unknown (404), and a forged new one gets only the same 503.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from uuid_utils import compat as uuid_utils

MAX_RETRIES = 10  # a client's bound; each waits Retry-After (1 s), the registration arrives well before


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def following_retry_after(send: Callable[[], httpx.Response]) -> tuple[httpx.Response, list[httpx.Response]]:
    """What a client does: send again after Retry-After while the answer is a 503 with one, at most MAX_RETRIES
    times. The final answer, and the 503s that came before it."""
    waited: list[httpx.Response] = []
    while True:
        response = send()
        if response.status_code != 503 or "retry-after" not in response.headers or len(waited) == MAX_RETRIES:
            return response, waited
        waited.append(response)
        time.sleep(int(response.headers["retry-after"]))


def assert_asked_to_retry(answers: list[httpx.Response], codes: set[str]) -> None:
    """Every early answer was a retryable 503 with one of ``codes``: never "unknown", never an error page."""
    for answer in answers:
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text
        body = answer.json()
        assert body["error"] in codes and body["details"] == {"retry_after_s": 1}, body


def register(catalog: str) -> dict[str, Any]:
    created = httpx.post(f"{catalog}/merchants", json={"handle": f"m{uuid.uuid4().hex[:12]}", "name": "First"})
    assert created.status_code == 201, created.text
    merchant: dict[str, Any] = created.json()
    assert uuid.UUID(merchant["id"]).version == 7
    return merchant


def list_product(catalog: str, merchant: dict[str, Any]) -> str:
    created = httpx.post(
        f"{catalog}/products",
        json={"merchant_id": merchant["id"], "title": "First mug", "price_minor": 1500, "currency": "EUR", "stock": 3},
        headers=bearer(merchant["api_key"]),
    )
    assert created.status_code == 201, created.text
    product_id = str(created.json()["id"])
    assert uuid.UUID(product_id).version == 7
    return product_id


def test_a_new_merchants_first_tweets_succeed_at_once_and_forged_ids_learn_nothing(
    service_process: Any, tmp_path: Path
) -> None:
    catalog_service, feed_service = service_process.start_many(["catalog", "feed"])
    catalog, feed = catalog_service.base_url, feed_service.base_url

    # Registered, listed and tweeted at once: a 201 after (at most) a few retryable 503s.
    merchant = register(catalog)
    product_id = list_product(catalog, merchant)
    body = {"merchant_id": merchant["id"], "text": "Our first mug!", "product_id": product_id}
    tweet, early = following_retry_after(
        lambda: httpx.post(f"{feed}/tweets", json=body, headers=bearer(merchant["api_key"]))
    )
    assert tweet.status_code == 201, tweet.text
    assert tweet.json()["buyable"] is True
    assert_asked_to_retry(early, {"merchant_not_yet_known", "product_not_yet_known"})

    # A product listed and tweeted at once by a merchant feed knows by now.
    second = list_product(catalog, merchant)
    body = {"merchant_id": merchant["id"], "text": "And a second one", "product_id": second}
    tweet, early = following_retry_after(
        lambda: httpx.post(f"{feed}/tweets", json=body, headers=bearer(merchant["api_key"]))
    )
    assert tweet.status_code == 201, tweet.text
    assert_asked_to_retry(early, {"product_not_yet_known"})

    # Forged ids. One that is not new: unknown, as before.
    old_merchant = {"merchant_id": str(uuid.uuid4()), "text": "hi"}
    unknown = httpx.post(f"{feed}/tweets", json=old_merchant, headers=bearer(merchant["api_key"]))
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_merchant")
    assert "retry-after" not in unknown.headers
    old_product = {"merchant_id": merchant["id"], "text": "hi", "product_id": str(uuid.uuid4())}
    unknown = httpx.post(f"{feed}/tweets", json=old_product, headers=bearer(merchant["api_key"]))
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_product")
    # A forged new one: the same 503 a genuine new one gets (feed cannot tell them apart, so it tells nothing),
    # answered at once, and only ever a 503: it never becomes a tweet.
    forged_id = uuid_utils.uuid7()
    forged = httpx.post(f"{feed}/tweets", json={"merchant_id": str(forged_id), "text": "hi"}, headers=bearer("x"))
    assert_asked_to_retry([forged], {"merchant_not_yet_known"})
    assert forged.json()["message"].replace(str(forged_id), "ID") == (
        "feed does not know merchant ID yet: if it was registered moments ago, catalog's event is on its way; "
        "retry after 1 s (Retry-After)"
    )
    forged_product = {"merchant_id": merchant["id"], "text": "hi", "product_id": str(uuid_utils.uuid7())}
    forged = httpx.post(f"{feed}/tweets", json=forged_product, headers=bearer(merchant["api_key"]))
    assert_asked_to_retry([forged], {"product_not_yet_known"})
    # Without a key nothing is looked up at all.
    anonymous = httpx.post(f"{feed}/tweets", json={"merchant_id": str(forged_id), "text": "hi"})
    assert anonymous.status_code == 401
    timeline = httpx.get(f"{feed}/timeline", params={"merchant_id": str(forged_id)}).json()
    assert timeline["tweets"] == []

    # The runbook's copy-paste example, pasted right after registering: curl --retry follows Retry-After.
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("no curl or bash on this machine")
    merchant = register(catalog)
    pasted = subprocess.run(
        ["bash", "-c", runbook_first_tweet().replace("http://localhost:8002", feed)],
        env={**os.environ, "MERCHANT_ID": merchant["id"], "API_KEY": merchant["api_key"]},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert pasted.returncode == 0, pasted.stderr
    posted = json.loads(pasted.stdout)
    assert (posted.get("text"), posted.get("merchant_id")) == ("Hello, followers", merchant["id"]), posted


def runbook_first_tweet() -> str:
    """The shell block of docs/runbook.md that posts a merchant's first tweet with curl."""
    runbook = (Path(__file__).resolve().parents[4] / "docs" / "runbook.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```sh\n(.*?)^```", runbook, flags=re.MULTILINE | re.DOTALL)
    (block,) = [b for b in blocks if "/tweets" in b and "--retry" in b]
    return str(block)
