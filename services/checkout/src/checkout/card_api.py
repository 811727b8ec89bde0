"""HTTP bodies of saved cards (``/buyers/me/cards``): never a card number, only what Stripe shows of a card."""

from __future__ import annotations

from pydantic import BaseModel, Field

from . import cards


class SavedCardOut(BaseModel):
    id: str = Field(description="The PaymentMethod id (pm_…): send it as `payment_method` to pay with this card")
    brand: str = Field(description="visa, mastercard, amex, …", examples=["visa"])
    last4: str = Field(description="The card number's last four digits", examples=["4242"])
    exp_month: int = Field(ge=0, le=12)
    exp_year: int

    @classmethod
    def of(cls, card: cards.SavedCard) -> SavedCardOut:
        return cls(id=card.id, brand=card.brand, last4=card.last4, exp_month=card.exp_month, exp_year=card.exp_year)


class SavedCardsOut(BaseModel):
    cards: list[SavedCardOut]
