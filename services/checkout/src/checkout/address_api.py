"""HTTP bodies of saved addresses (``/buyers/me/addresses``): the same fields and bounds as an order's shipping
address (``api.ShippingIn``), so a saved address can be sent as an order's ``shipping`` as it is."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from .api import ShippingIn, ShippingOut
from .domain import ShippingAddress
from .usecases.addresses import SavedAddress


class AddressIn(ShippingIn):
    """An address to save; ``default`` makes it the one the web app fills in (the first saved always is)."""

    default: bool = Field(default=False, strict=True, description="Make it the buyer's default address")

    def to_address(self) -> ShippingAddress:
        return ShippingAddress(
            name=self.name, line1=self.line1, city=self.city, country=self.country, lat=self.lat, lon=self.lon
        )


class SavedAddressOut(ShippingOut):
    id: uuid.UUID = Field(description="Send it to make this address the default, or to remove it")
    is_default: bool = Field(description="The address the web app fills in; at most one is")
    created_at: datetime

    @classmethod
    def of(cls, saved: SavedAddress) -> SavedAddressOut:
        a = saved.address
        return cls(
            id=saved.id,
            name=a.name,
            line1=a.line1,
            city=a.city,
            country=a.country,
            lat=a.lat,
            lon=a.lon,
            is_default=saved.is_default,
            created_at=saved.created_at,
        )


class SavedAddressesOut(BaseModel):
    addresses: list[SavedAddressOut] = Field(description="The default first, then the newest")

    @classmethod
    def of(cls, saved: list[SavedAddress]) -> SavedAddressesOut:
        return cls(addresses=[SavedAddressOut.of(one) for one in saved])
