"""checkout's saved-card routes (``/buyers/me/cards``): wired by ``main.create_app`` like the buyer routes.

The cards live at Stripe, on the buyer's Customer (``checkout.cards``): listing asks Stripe, removing detaches the
card there. No credential: 401; an unknown or revoked one: 401; another buyer's card: 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Path, Response, status
from tweetshop_platform.runtime import ServiceRuntime

from .buyer_routes import _REFUSALS, Credential
from .card_api import SavedCardOut, SavedCardsOut
from .usecases import cards
from .usecases.cards import CardGateway

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "Stripe did not answer (`payment_provider_unavailable`): nothing was done"}
}


def install(app: FastAPI, runtime: ServiceRuntime, gateway: CardGateway) -> None:
    """``GET /buyers/me/cards`` and ``DELETE /buyers/me/cards/{payment_method_id}``."""

    @app.get(
        "/buyers/me/cards",
        operation_id="listMyCards",
        response_model=SavedCardsOut,
        tags=["buyers"],
        summary="The buyer's saved cards (brand, last four digits, expiry), as Stripe keeps them",
        responses={401: {"description": _REFUSALS[401]}, **_UNAVAILABLE},
    )
    async def list_my_cards(credential: Credential) -> SavedCardsOut:
        found = await cards.list_cards(runtime.pool, gateway, credential)
        return SavedCardsOut(cards=[SavedCardOut.of(card) for card in found])

    @app.delete(
        "/buyers/me/cards/{payment_method_id}",
        operation_id="removeMyCard",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        tags=["buyers"],
        summary="Remove a saved card: detached at Stripe, it can never be charged again",
        responses={
            401: {"description": _REFUSALS[401]},
            404: {"description": "Another buyer's card, or no such saved card (`payment_method_not_found`)"},
            **_UNAVAILABLE,
        },
    )
    async def remove_my_card(
        credential: Credential,
        payment_method_id: Annotated[str, Path(max_length=203, description="The saved card's id (pm_…)")],
    ) -> Response:
        await cards.remove_card(runtime.pool, gateway, credential, payment_method_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)
