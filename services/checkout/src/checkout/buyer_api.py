"""HTTP request and response bodies of buyer accounts (``/buyers``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from tweetshop_platform.validation import RequestBody

from . import accounts
from .api import OrderOut

CREDENTIAL_DOC = (
    "The buyer credential, answered once and stored only as its SHA-256: send it as "
    "`Authorization: Bearer <credential>` for the buyer's own resources. The web app keeps it in an HttpOnly "
    "cookie, out of reach of scripts"
)


class BuyerOut(BaseModel):
    id: str = Field(description="The buyer's opaque id (ba_…): the buyer_id of their orders on checkout.orders.v1")
    created_at: datetime
    devices: int = Field(description="Devices signed in to this account (live credentials)")


class BuyerSignedIn(BaseModel):
    """A new credential: a new buyer (``POST /buyers``) or a newly linked device (``POST /buyers/link``)."""

    buyer: BuyerOut
    credential: str = Field(description=CREDENTIAL_DOC)


class LinkCodeOut(BaseModel):
    code: str = Field(
        description=f"Type it on the other device within {int(accounts.LINK_CODE_TTL.total_seconds() // 60)} "
        "minutes; used once; a new code replaces this one",
        examples=["K7QM-3XWD"],
    )
    expires_at: datetime


class LinkIn(RequestBody):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(
        min_length=1,
        max_length=32,
        description="The code the other device shows (case, spaces and dashes do not matter)",
        examples=["K7QM-3XWD"],
    )


class SignedOut(BaseModel):
    revoked: int = Field(description="Credentials revoked: every device of the buyer must link again")


class MyOrdersOut(BaseModel):
    orders: list[OrderOut]
    next_cursor: str | None = Field(description="Pass as `?cursor=` for the next page; null on the last page")
