"""HTTP request and response bodies of catalog."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from tweetshop_platform.validation import RequestBody

from .domain import Product


class MerchantIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    handle: str = Field(pattern=r"^[a-z0-9_]{2,30}$", description="Lower-case handle, as in @fancy")
    name: str = Field(min_length=1, max_length=200)


class MerchantOut(BaseModel):
    id: uuid.UUID
    handle: str
    name: str


class MerchantCreated(MerchantOut):
    api_key: str = Field(description="Shown once: send it as `Authorization: Bearer <api_key>`")


class ApiKeyOut(BaseModel):
    api_key: str


class ProductIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    merchant_id: uuid.UUID
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    image_url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")
    price_minor: int = Field(gt=0, le=100_000_000, description="Price in minor units (cents)")
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    stock: int = Field(ge=0, le=1_000_000, description="Units on sale")


class ProductPatch(RequestBody):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=5000)
    image_url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://")
    price_minor: int | None = Field(default=None, gt=0, le=100_000_000)
    stock: int | None = Field(default=None, ge=0, le=1_000_000, description="Units on sale (reserved ones aside)")
    status: Literal["active", "delisted"] | None = None


class ProductOut(BaseModel):
    id: uuid.UUID
    merchant_id: uuid.UUID
    title: str
    description: str
    image_url: str | None
    price_minor: int
    currency: str
    stock_available: int
    stock_reserved: int
    stock_sold: int
    status: Literal["active", "delisted"]
    version: int

    @classmethod
    def of(cls, p: Product) -> ProductOut:
        return cls.model_validate(p, from_attributes=True)  # the product's fields, by name
