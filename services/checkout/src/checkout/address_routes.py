"""checkout's saved-address routes (``/buyers/me/addresses``): wired by ``main.create_app`` like the card routes.

The addresses live in checkout's database, the buyer's own (``usecases.addresses``); they go with the account
when it is deleted. No credential: 401; an unknown or revoked one: 401; another buyer's address: 404.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import FastAPI, Path, Response, status
from tweetshop_platform.runtime import ServiceRuntime

from .address_api import AddressIn, SavedAddressesOut, SavedAddressOut
from .buyer_routes import _REFUSALS, Credential
from .usecases import addresses

_NOT_FOUND = "Another buyer's address, or no such saved address (`address_not_found`)"
AddressId = Annotated[uuid.UUID, Path(description="The saved address's id")]


def install(app: FastAPI, runtime: ServiceRuntime) -> None:
    """``GET``/``POST /buyers/me/addresses``, ``PUT …/{address_id}/default`` and ``DELETE …/{address_id}``."""

    @app.get(
        "/buyers/me/addresses",
        operation_id="listMyAddresses",
        response_model=SavedAddressesOut,
        tags=["buyers"],
        summary="The buyer's saved shipping addresses, the default first",
        responses={401: {"description": _REFUSALS[401]}},
    )
    async def list_my_addresses(credential: Credential) -> SavedAddressesOut:
        return SavedAddressesOut.of(await addresses.list_addresses(runtime.pool, credential))

    @app.post(
        "/buyers/me/addresses",
        operation_id="saveMyAddress",
        status_code=status.HTTP_201_CREATED,
        response_model=SavedAddressOut,
        tags=["buyers"],
        summary="Save a shipping address (the first one saved, or one sent with `default`, is the default)",
        responses={
            401: {"description": _REFUSALS[401]},
            409: {
                "description": f"Already {addresses.MAX_ADDRESSES} saved addresses: remove one first "
                "(`too_many_addresses`)"
            },
        },
    )
    async def save_my_address(credential: Credential, body: AddressIn) -> SavedAddressOut:
        saved = await addresses.save_address(runtime.pool, credential, body.to_address(), make_default=body.default)
        return SavedAddressOut.of(saved)

    @app.put(
        "/buyers/me/addresses/{address_id}/default",
        operation_id="makeMyAddressDefault",
        response_model=SavedAddressesOut,
        tags=["buyers"],
        summary="Make a saved address the default (the one the web app fills in); the addresses after it",
        responses={401: {"description": _REFUSALS[401]}, 404: {"description": _NOT_FOUND}},
    )
    async def make_my_address_default(credential: Credential, address_id: AddressId) -> SavedAddressesOut:
        return SavedAddressesOut.of(await addresses.make_default(runtime.pool, credential, address_id))

    @app.delete(
        "/buyers/me/addresses/{address_id}",
        operation_id="removeMyAddress",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        tags=["buyers"],
        summary="Remove a saved address (removing the default makes the newest remaining one the default)",
        responses={401: {"description": _REFUSALS[401]}, 404: {"description": _NOT_FOUND}},
    )
    async def remove_my_address(credential: Credential, address_id: AddressId) -> Response:
        await addresses.remove_address(runtime.pool, credential, address_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)
