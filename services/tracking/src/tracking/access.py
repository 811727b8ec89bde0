"""Who may read and write what in tracking: buyers, couriers and operators (the routes' authorisation rules).

- **Buyers** read their order's shipments, route, live stream and map page with the order's access token:
  ``Authorization: Bearer``, or ``?access_token=``/``?token=`` (EventSource and the map page's link cannot
  send headers). 401 without a token, 404 with any other one: whether an order has a shipment is private.
- **Operators** read anything, list shipments by status and issue courier tokens, with the operator key as
  ``Authorization: Bearer`` only: the key in a URL is refused (403) on every route, even alongside the header,
  since a URL ends up in browser history, proxy and access logs, and Referer headers.
- **Couriers** post one shipment's locations with its courier token (bearer): 404 for an unknown shipment,
  403 for another token.
"""

# No `from __future__ import annotations` here: FastAPI reads the real types of these dependencies.
import uuid
from collections.abc import Awaitable, Callable

from fastapi import Request
from pydantic import SecretStr
from tweetshop_platform.auth import bearer_token, is_operator_key, operator_only
from tweetshop_platform.errors import Forbidden

from .domain import Shipment

# Where a browser may put a token it cannot send as a header (the map page's link, EventSource): buyers' only.
QUERY_TOKEN_NAMES = ("access_token", "token")

# (order_id, token) → None, or NotFound; (shipment_id, token) → None, or NotFound/Forbidden.
BuyerCheck = Callable[[uuid.UUID, str], Awaitable[None]]
CourierCheck = Callable[[uuid.UUID, str], Awaitable[None]]


class TrackingAccess:
    """The authorisation rules of tracking's routes; ``buyer`` and ``courier`` check a token against the database."""

    def __init__(self, operator_key: SecretStr, *, buyer: BuyerCheck, courier: CourierCheck) -> None:
        self._operator_key = operator_key
        self._buyer = buyer
        self._courier = courier
        # A FastAPI dependency (or a plain check): 401 without a bearer token, 403 unless it is the operator key.
        self.operator = operator_only(operator_key)

    def is_operator(self, token: str) -> bool:
        return is_operator_key(token, self._operator_key)

    def refuse_operator_key_in_url(self, request: Request) -> None:
        """403 when the operator key rides in the URL (``?token=``/``?access_token=``), on every route.

        Only a buyer's token may be put there (the map page's link, EventSource): a URL ends up in browser
        history, proxy and access logs, and Referer headers. Operators send the key as ``Authorization: Bearer``.
        """
        for name in QUERY_TOKEN_NAMES:
            value = request.query_params.get(name, "").strip()
            if value and self.is_operator(value):
                raise Forbidden(
                    "the operator key is never accepted in a URL (?token= or ?access_token=): send it as "
                    "Authorization: Bearer <key>, and replace it, since this URL may have been logged",
                    code="operator_key_in_url",
                )

    def presented_token(self, request: Request) -> str:
        """The caller's token: ``Authorization: Bearer``, or ``access_token``/``token`` in the query (EventSource
        and the map page's link cannot send headers, so a buyer's token may ride there); 401 when there is none.
        """
        self.refuse_operator_key_in_url(request)
        if "authorization" not in request.headers:
            for name in QUERY_TOKEN_NAMES:
                value = request.query_params.get(name, "").strip()
                if value:
                    return value
        return bearer_token(request)

    async def authorize_order_reader(self, request: Request, order_id: uuid.UUID) -> None:
        """The order's buyer (its access token) or an operator; 401 without a token, 404 with any other one.

        404, not 403: whether an order has a shipment is itself private to its buyer.
        """
        token = self.presented_token(request)
        if self.is_operator(token):
            return
        await self._buyer(order_id, token)

    async def authorize_shipment_reader(self, request: Request, shipment: Shipment) -> None:
        """Reading a shipment needs its order's access token (or the operator key)."""
        await self.authorize_order_reader(request, shipment.order_id)

    async def courier_token(self, shipment_id: uuid.UUID, request: Request) -> str:
        """The shipment's courier token (bearer), checked: 401 without, 404 unknown shipment, 403 another token.

        A dependency, so credentials are checked (401/403/404) before the body is validated (422).
        """
        token = bearer_token(request)
        await self._courier(shipment_id, token)
        return token
