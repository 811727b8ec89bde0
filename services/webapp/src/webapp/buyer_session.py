"""The buyer's session in the web app: checkout's buyer credential in a cookie that scripts never see.

``POST /account/session`` makes a buyer (checkout's ``POST /buyers``) the first time and keeps the credential in
the ``tweetshop_buyer`` cookie: HttpOnly (no script reads it), SameSite=Lax (no cross-site request carries it,
but following a link to the web app does), Secure — except when the page itself was asked for over plain http
from a loopback name (``localhost``, ``127.*``, ``::1``: ``make run`` and the tests), where a Secure cookie
could not come back. Behind a TLS proxy the Host is the public name, so the cookie is Secure there.
``POST /account/link`` trades a code from another device for a credential of the same buyer (the cookie is
replaced); ``POST /account/sign-out-everywhere`` revokes every credential of the buyer and drops the cookie.

The gateway turns the cookie into ``Authorization: Bearer`` for the buyer's own checkout resources only
(``/orders...`` and ``/buyers/me...``), and only when the request has no Authorization of its own. A request
that changes something with the cookie's authority must prove it comes from the web app's own pages (CSRF): it
carries ``X-Requested-With: tweetshop`` (a header no form can send, and no other site's script without a CORS
preflight the web app never grants), and its ``Origin``, when the browser sends one, is the web app's own host.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyCookie
from pydantic import BaseModel, ConfigDict, Field
from tweetshop_platform.http import error_body
from tweetshop_platform.openapi import Credential
from tweetshop_platform.ratelimit import client_address

from .config import WebappSettings

log = structlog.get_logger(__name__)

COOKIE = "tweetshop_buyer"
COOKIE_MAX_AGE_S = 400 * 24 * 3600  # the longest a browser keeps a cookie
CSRF_HEADER = "x-requested-with"
CSRF_VALUE = "tweetshop"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = ("localhost", "::1", "[::1]")
# The paths of checkout, behind /api/checkout/, that belong to a buyer: the cookie may authorise these only.
_BUYER_OWNED_PREFIXES = ("/orders", "/buyers/me")
# checkout's routes that answer a credential: only this module's routes call them (the cookie, not the page).
CREDENTIAL_ROUTES = frozenset({"buyers", "buyers/link"})


class CookieCredential(APIKeyCookie, Credential):
    """The buyer credential in the web app's cookie, documented as such: as a dependency, its value or None."""

    def __init__(self, description: str, refusals: Mapping[int, str], *, anonymous: bool) -> None:
        super().__init__(name=COOKIE, scheme_name="buyerCookie", description=description, auto_error=False)
        self.refusals = dict(refusals)
        self.required = False
        self.anonymous = anonymous

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        return credential_of(request)


_COOKIE_DOC = (
    "checkout's buyer credential, kept by the web app in the HttpOnly cookie `tweetshop_buyer` (set by "
    "`POST /account/session` or `POST /account/link`): scripts never see it."
)
# Optional: without it, a new buyer (session) or the linked one (link) is made.
BUYER_COOKIE_OPTIONAL = CookieCredential(_COOKIE_DOC, {}, anonymous=True)
BUYER_COOKIE = CookieCredential(_COOKIE_DOC, {401: "This browser is not signed in (`not_signed_in`)"}, anonymous=False)


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=32, description="The code the other device shows")


class BuyerOut(BaseModel):
    id: str
    created_at: str
    devices: int


class SessionOut(BaseModel):
    buyer: BuyerOut


def credential_of(request: Request) -> str | None:
    """The buyer credential the cookie holds, or None."""
    value = request.cookies.get(COOKIE, "").strip()
    return value if value.startswith("tsb_") and len(value) <= 200 else None


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK_NAMES or host.startswith("127.")


def cookie_secure(request: Request) -> bool:
    """Secure unless the page was asked for over plain http from a loopback name (make run, the tests)."""
    return not (request.url.scheme == "http" and _is_loopback(request.url.hostname or ""))


def set_cookie(response: Response, request: Request, credential: str) -> None:
    response.set_cookie(
        COOKIE,
        credential,
        max_age=COOKIE_MAX_AGE_S,
        path="/",
        httponly=True,
        secure=cookie_secure(request),
        samesite="lax",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, secure=cookie_secure(request), samesite="lax")


def csrf_problem(request: Request) -> str | None:
    """Why a state-changing request may not use the cookie's authority, or None when it may."""
    if request.method in SAFE_METHODS:
        return None
    if request.headers.get(CSRF_HEADER, "").strip().lower() != CSRF_VALUE:
        return f"send the header X-Requested-With: {CSRF_VALUE} (the web app's pages do)"
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin.split("://", 1)[-1].rstrip("/").lower() != host.lower():
            return "this request comes from another site"
    return None


def csrf_refused(why: str) -> JSONResponse:
    return JSONResponse(error_body("csrf_refused", f"refused: {why}"), status_code=403)


def upstream_bearer(request: Request, upstream: str, path: str) -> str | None:
    """``Bearer <credential>`` from the cookie for a buyer-owned checkout call without an Authorization of its
    own, else None."""
    if "authorization" in request.headers or upstream != "checkout":
        return None
    if not any(path == p or path.startswith(p + "/") or path.startswith(p + "?") for p in _BUYER_OWNED_PREFIXES):
        return None
    credential = credential_of(request)
    return f"Bearer {credential}" if credential else None


def _upstream_headers(request: Request, trusted: Any, credential: str | None = None) -> dict[str, str]:
    headers = {
        "x-correlation-id": str(request.state.correlation_id),
        "x-forwarded-for": client_address(request.scope, trusted),
    }
    if credential:
        headers["authorization"] = f"Bearer {credential}"
    return headers


def _relay_error(upstream: httpx.Response) -> JSONResponse:
    try:
        body = upstream.json()
    except ValueError:
        body = error_body("upstream_error", f"checkout answered {upstream.status_code}")
    headers = {"retry-after": upstream.headers["retry-after"]} if "retry-after" in upstream.headers else None
    return JSONResponse(body, status_code=upstream.status_code, headers=headers)


def _session(buyer: Mapping[str, Any]) -> dict[str, Any]:
    return {"buyer": {"id": buyer["id"], "created_at": buyer["created_at"], "devices": buyer["devices"]}}


_UNAVAILABLE = JSONResponse(
    error_body("upstream_unavailable", "checkout is not reachable right now; try again in a moment"), status_code=502
)
_REFUSED_DOC: dict[int | str, dict[str, Any]] = {
    403: {"description": "Not from the web app's own pages (`csrf_refused`): X-Requested-With or Origin"},
    502: {"description": "checkout did not answer"},
}


def install(app: FastAPI, settings: WebappSettings) -> None:
    """The ``/account/...`` routes: the only ones that see a buyer credential, and keep it in the cookie."""
    checkout = settings.checkout_url

    def gateway(request: Request) -> Any:
        return request.app.state.gateway

    async def call(request: Request, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        upstreams = gateway(request)
        try:
            return await upstreams.client.request(method, checkout + path, **kwargs)  # type: ignore[no-any-return]
        except httpx.HTTPError as exc:
            log.warning("checkout unreachable for the buyer session", error=repr(exc))
            return None

    @app.post(
        "/account/session",
        operation_id="startBuyerSession",
        tags=["account"],
        response_model=SessionOut,
        summary="This browser's buyer: the one its cookie names, or a new one (the credential stays in the cookie)",
        responses={
            **_REFUSED_DOC,
            401: {
                "description": "checkout refused the buyer it just made (not expected: a revoked cookie is replaced)"
            },
            429: {"description": "Too many new buyers from this address"},
        },
        dependencies=[Depends(BUYER_COOKIE_OPTIONAL)],
    )
    async def start_session(request: Request) -> Response:
        problem = csrf_problem(request)
        if problem:
            return csrf_refused(problem)
        trusted = gateway(request).trusted
        credential = credential_of(request)
        if credential:
            me = await call(request, "GET", "/buyers/me", headers=_upstream_headers(request, trusted, credential))
            if me is None:
                return _UNAVAILABLE
            if me.status_code == 200:
                return JSONResponse(_session(me.json()))
            if me.status_code != 401:
                return _relay_error(me)
        created = await call(request, "POST", "/buyers", headers=_upstream_headers(request, trusted))
        if created is None:
            return _UNAVAILABLE
        if created.status_code != 201:
            return _relay_error(created)
        answer = created.json()
        response = JSONResponse(_session(answer["buyer"]), status_code=201)
        set_cookie(response, request, answer["credential"])
        return response

    @app.post(
        "/account/link",
        operation_id="linkThisDevice",
        tags=["account"],
        response_model=SessionOut,
        summary="Sign this browser in to the buyer whose other device shows this code (replaces this browser's)",
        responses={
            **_REFUSED_DOC,
            401: {"description": "Wrong, expired or used code (`invalid_link_code`)"},
            422: {"description": "Not the shape of a code"},
            429: {"description": "Too many attempts from this address"},
        },
        dependencies=[Depends(BUYER_COOKIE_OPTIONAL)],
    )
    async def link_device(body: LinkIn, request: Request) -> Response:
        problem = csrf_problem(request)
        if problem:
            return csrf_refused(problem)
        headers = _upstream_headers(request, gateway(request).trusted)
        linked = await call(request, "POST", "/buyers/link", json={"code": body.code}, headers=headers)
        if linked is None:
            return _UNAVAILABLE
        if linked.status_code != 201:
            return _relay_error(linked)
        answer = linked.json()
        response = JSONResponse(_session(answer["buyer"]), status_code=201)
        set_cookie(response, request, answer["credential"])
        return response

    @app.post(
        "/account/sign-out-everywhere",
        operation_id="signOutEverywhereFromBrowser",
        tags=["account"],
        summary="Revoke every device of this browser's buyer (this one too) and forget the cookie",
        responses={**_REFUSED_DOC, 401: {"description": "This browser is not signed in (`not_signed_in`)"}},
        dependencies=[Depends(BUYER_COOKIE)],
    )
    async def sign_out_everywhere(request: Request) -> Response:
        problem = csrf_problem(request)
        if problem:
            return csrf_refused(problem)
        credential = credential_of(request)
        if not credential:
            return JSONResponse(error_body("not_signed_in", "this browser is not signed in"), status_code=401)
        headers = _upstream_headers(request, gateway(request).trusted, credential)
        out = await call(request, "POST", "/buyers/me/sign-out-everywhere", headers=headers)
        if out is None:
            return _UNAVAILABLE
        if out.status_code not in (200, 401):
            return _relay_error(out)
        response = JSONResponse(out.json(), status_code=out.status_code)
        clear_cookie(response, request)
        return response
