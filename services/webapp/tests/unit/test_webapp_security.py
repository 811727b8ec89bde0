"""The web app runs no text from data as HTML: a strict CSP on every answer, and pages and scripts that build DOM
from data as text only (checked in their source here; in Chromium by tests/browser/test_no_html_from_data.py)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import pytest
from tweetshop_devstack.testing import csp_directives
from webapp.main import STATIC_DIR

if TYPE_CHECKING:
    from conftest import OpenWebapp
    from webapp.config import WebappSettings


def services(request: httpx.Request) -> httpx.Response:
    """The four services, answering JSON; one that tries to choose the browser's security headers itself."""

    async def body() -> AsyncIterator[bytes]:  # streamed, as an answer from the network is
        yield json.dumps({"tweets": [], "next_cursor": None}).encode()

    return httpx.Response(
        200,
        headers={
            "content-type": "application/json",
            "content-security-policy": "script-src *",
            "referrer-policy": "unsafe-url",
        },
        content=body(),
    )


EVERY_KIND_OF_ANSWER = [
    "/",
    "/orders",
    "/orders/0f8e4c2a-2d1e-4c57-9d0c-7d3f0b8a1e55",
    "/merchant",
    "/static/js/common.js",
    "/static/app.css",
    "/config.json",
    "/api/feed/timeline",  # an upstream answer passed through
    "/api/nothing/here",  # an error of the web app itself
    "/static/nothing.js",
]


@pytest.mark.parametrize("path", EVERY_KIND_OF_ANSWER)
async def test_every_answer_carries_a_strict_csp_nosniff_and_no_referrer(path: str, webapp: OpenWebapp) -> None:
    async with webapp(services) as client:
        response = await client.get(path)

    csp = csp_directives(response.headers["content-security-policy"])
    assert csp["script-src"] == ["'self'", "http://127.0.0.1:8420"], "here and the Stripe stand-in; nothing inline"
    assert csp["style-src"] == ["'self'"], "the stand-in styles itself through the CSSOM only"
    assert csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["connect-src"] == ["'self'", "http://127.0.0.1:8420"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_with_real_stripe_scripts_come_from_here_and_stripe_only_and_never_inline(
    webapp: OpenWebapp, real_stripe: WebappSettings
) -> None:
    async with webapp(services, real_stripe) as client:
        csp = csp_directives((await client.get("/")).headers["content-security-policy"])

    assert csp["script-src"][0] == "'self'"
    assert all(source.startswith("https://") and "stripe.com" in source for source in csp["script-src"][1:])
    assert "https://hooks.stripe.com" in csp["frame-src"], "3-D Secure"
    for sources in csp.values():
        assert "'unsafe-eval'" not in sources
    assert "'unsafe-inline'" not in csp["script-src"]
    assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]


@pytest.mark.parametrize("page", sorted(p.name for p in STATIC_DIR.glob("*.html")))
def test_pages_have_no_inline_script_handler_or_style(page: str) -> None:
    html = (STATIC_DIR / page).read_text(encoding="utf-8")

    for tag in re.findall(r"<script\b[^>]*>", html):
        assert re.search(r'\ssrc="/static/js/[\w-]+\.js"', tag), tag
    assert not re.findall(r"<script\b[^>]*>(?!</script>)", html), "inline script"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert not re.search(r"\sstyle\s*=|<style", html), "inline style"
    assert "javascript:" not in html


@pytest.mark.parametrize("script", sorted(p.name for p in (STATIC_DIR / "js").glob("*.js")))
def test_scripts_never_parse_text_as_html(script: str) -> None:
    source = (STATIC_DIR / "js" / script).read_text(encoding="utf-8")

    forbidden = r"\.(innerHTML|outerHTML)\b|insertAdjacentHTML|document\.write|createContextualFragment|DOMParser"
    assert not re.search(forbidden, source)
    assert not re.search(r"\beval\(|new Function\(|setTimeout\(\s*[\"'`]", source)
    assert not re.search(r"setAttribute\(\s*[\"']on", source), "handlers are functions, never attribute strings"
