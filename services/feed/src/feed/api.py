"""HTTP request and response bodies of feed."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from tweetshop_platform.errors import Unprocessable

from . import domain
from .domain import Follow, Merchant, Product, TweetView


class TweetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    merchant_id: uuid.UUID = Field(description="The merchant posting (its API key goes in `Authorization: Bearer`)")
    text: str = Field(min_length=1, max_length=domain.TWEET_MAX_CHARS, description="1 to 280 characters")
    product_id: uuid.UUID | None = Field(
        default=None, description="A product of this merchant: makes the tweet buyable"
    )

    @field_validator("text")
    @classmethod
    def _text_rules(cls, value: str) -> str:
        try:
            return domain.check_text(value)
        except Unprocessable as exc:
            raise ValueError(exc.message) from exc


class MerchantOut(BaseModel):
    id: uuid.UUID
    handle: str = Field(description="As in @fancy")
    name: str

    @classmethod
    def of(cls, m: Merchant) -> MerchantOut:
        return cls(id=m.id, handle=m.handle, name=m.name)


class ProductCard(BaseModel):
    """The live state of a tweet's product, read when the tweet is shown."""

    id: uuid.UUID
    title: str
    description: str
    image_url: str | None
    price_minor: int = Field(description="Current price in minor units (cents)")
    currency: str = Field(description="ISO 4217")
    stock_available: int = Field(description="Units that can be bought now")
    in_stock: bool = Field(description="False when sold out")
    status: Literal["active", "delisted"]
    buyable: bool = Field(description="On sale and in stock: the Buy button works")

    @classmethod
    def of(cls, p: Product) -> ProductCard:
        return cls.model_validate(p, from_attributes=True)  # its fields and properties (in_stock, buyable), by name


class TweetOut(BaseModel):
    id: uuid.UUID
    merchant_id: uuid.UUID
    merchant: MerchantOut | None = Field(description="Handle and name, when feed knows the merchant")
    text: str
    buyable: bool = Field(description="Carries a product that can be bought right now")
    product: ProductCard | None = Field(description="Live product card of a tweet that carries a product")
    created_at: datetime

    @classmethod
    def of(cls, v: TweetView) -> TweetOut:
        return cls(
            id=v.tweet.id,
            merchant_id=v.tweet.merchant_id,
            merchant=MerchantOut.of(v.merchant) if v.merchant else None,
            text=v.tweet.text,
            buyable=v.buyable,
            product=ProductCard.of(v.product) if v.product else None,
            created_at=v.tweet.created_at,
        )


class TimelineOut(BaseModel):
    tweets: list[TweetOut] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Pass as `?cursor=` for the next page; null on the last page")


class FollowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    buyer_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=domain.BUYER_ID_MAX_CHARS,
        description=(
            "The buyer's opaque id (1 to 200 visible ASCII characters), as sent with its orders. With a buyer "
            "credential it may be left out (the credential names the buyer); a buyer account's id (`ba_...`) "
            "works only with that account's credential"
        ),
        json_schema_extra={"pattern": domain.BUYER_ID_PATTERN},  # checked by the validator below
    )
    merchant_id: uuid.UUID = Field(description="The merchant to follow")

    @field_validator("buyer_id")
    @classmethod
    def _buyer_id_rules(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return domain.check_buyer_id(value)
        except Unprocessable as exc:
            raise ValueError(exc.message) from exc


class FollowOut(BaseModel):
    buyer_id: str
    merchant: MerchantOut
    followed_at: datetime

    @classmethod
    def of(cls, f: Follow) -> FollowOut:
        return cls(buyer_id=f.buyer_id, merchant=MerchantOut.of(f.merchant), followed_at=f.followed_at)


class FollowingOut(BaseModel):
    buyer_id: str
    following: list[FollowOut] = Field(description="Most recently followed first")
