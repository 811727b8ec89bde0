"""A tweet's own page (``/t/<tweet_id>``), the link a merchant shares, and a shop's page (``/m/<merchant_id>``):
the same static page for any id (it reads the tweet or the shop's tweets through /api/feed, as text), under the
same CSP as every page; an id that is not one is 422."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import httpx
import pytest
from tweetshop_devstack.testing import csp_directives

if TYPE_CHECKING:
    from conftest import OpenWebapp


def nothing_upstream(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"the page itself calls no service: {request.url}")


async def test_a_tweet_page_is_the_static_page_with_the_strict_csp(webapp: OpenWebapp) -> None:
    async with webapp(nothing_upstream) as client:
        response = await client.get(f"/t/{uuid.uuid4()}")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/js/tweet.js"></script>' in response.text
    assert 'id="sheet"' in response.text and 'id="save-card"' in response.text
    csp = csp_directives(response.headers["content-security-policy"])
    assert csp["script-src"] == ["'self'", "http://127.0.0.1:8420"]
    assert csp["frame-ancestors"] == ["'none'"]


async def test_a_shop_page_is_the_timeline_page(webapp: OpenWebapp) -> None:
    async with webapp(nothing_upstream) as client:
        response = await client.get(f"/m/{uuid.uuid4()}")

    assert response.status_code == 200
    assert '<script type="module" src="/static/js/timeline.js"></script>' in response.text
    assert "content-security-policy" in response.headers


@pytest.mark.parametrize("page", ["t", "m"])
@pytest.mark.parametrize("tweet_id", ["not-a-tweet", "%3Cscript%3E", "1' OR '1'='1", "0" * 200])
async def test_anything_but_an_id_is_refused(page: str, tweet_id: str, webapp: OpenWebapp) -> None:
    async with webapp(nothing_upstream) as client:
        response = await client.get(f"/{page}/{tweet_id}")

    assert response.status_code == 422
    assert "<script>" not in response.text
