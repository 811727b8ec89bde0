"""Entry points for messages: translate one event into one service call."""

from __future__ import annotations

import asyncpg
from tweetshop_contracts import (
    BuyerCredentialIssued,
    BuyerCredentialsRevoked,
    BuyerDeleted,
    Envelope,
    MerchantApiKeyRotated,
    MerchantRegistered,
    ProductListed,
    ProductUpdated,
)

from . import service


async def on_merchant_event(conn: asyncpg.Connection, event: Envelope) -> None:
    """catalog.merchants.v1 → the merchant read model."""
    match event:
        case MerchantRegistered():
            await service.record_merchant(conn, event)
        case MerchantApiKeyRotated():
            await service.record_key_rotation(conn, event)


async def on_product_event(conn: asyncpg.Connection, event: Envelope) -> None:
    """catalog.products.v1 → the product read model (newer versions only)."""
    match event:
        case ProductListed() | ProductUpdated():
            await service.apply_product_state(conn, event)


async def on_buyer_event(conn: asyncpg.Connection, event: Envelope) -> None:
    """checkout.buyers.v1 → the buyers' credential verifiers; a deleted buyer's follows are erased."""
    match event:
        case BuyerCredentialIssued():
            await service.record_buyer_credential(conn, event)
        case BuyerCredentialsRevoked():
            await service.revoke_buyer_credentials(conn, event)
        case BuyerDeleted():
            await service.erase_buyer(conn, event)
