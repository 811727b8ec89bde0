"""checkout's account deletion route (``DELETE /buyers/me``): wired by ``main.create_app`` like the buyer routes.

What is deleted and what is kept: ``usecases.account_deletion``.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, Field
from tweetshop_platform.runtime import ServiceRuntime

from .buyer_routes import _REFUSALS, Credential
from .usecases import account_deletion


class AccountDeleted(BaseModel):
    deleted: str = Field(description="The buyer id that no longer exists")
    orders_kept: int = Field(description="Orders kept for the merchants' records, without the buyer's personal data")
    cards_removed: bool = Field(description="The buyer had a Stripe Customer, now deleted with its saved cards")


def install(app: FastAPI, runtime: ServiceRuntime, card_gateway: object) -> None:
    """``DELETE /buyers/me``; ``card_gateway`` deletes the buyer's Stripe Customer (``customer_eraser``)."""
    customers = account_deletion.customer_eraser(card_gateway)

    @app.delete(
        "/buyers/me",
        operation_id="deleteMyAccount",
        response_model=AccountDeleted,
        tags=["buyers"],
        summary="Delete this buyer account: saved cards at Stripe, every device, and the personal data of its orders",
        description=(
            "The buyer's Stripe Customer is deleted (its saved cards with it), then the account, its credentials "
            "and link code; its orders stay for the merchant's records without the e-mail, recipient name and "
            "street (country and city kept, the delivery point only to about 10 km). `BuyerDeleted` goes on "
            "checkout.buyers.v1: feed forgets the buyer's follows. Every credential of the buyer stops working."
        ),
        responses={
            401: {"description": _REFUSALS[401]},
            409: {
                "description": "An order of the buyer is still being paid (`orders_in_progress`), or a card was "
                "being saved meanwhile (`account_changed`): try again once it is done"
            },
            503: {"description": "Stripe did not answer (`payment_provider_unavailable`): nothing was deleted"},
        },
    )
    async def delete_my_account(credential: Credential) -> AccountDeleted:
        deleted = await account_deletion.delete_account(runtime.pool, credential, customers)
        return AccountDeleted(
            deleted=deleted.buyer_id, orders_kept=deleted.orders_kept, cards_removed=deleted.customer_deleted
        )
