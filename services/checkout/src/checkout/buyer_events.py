"""What checkout tells other services about buyer accounts, on checkout.buyers.v1: an opaque buyer id and the
SHA-256 of its credentials, never an e-mail, a name, an address or a card.

Each event is published through the outbox in the same transaction as the change it announces
(``usecases.buyers``, ``usecases.account_deletion``), so feed's verifiers never disagree with checkout's for long:
a credential issued is announced, a credential revoked is announced by its hash, a deleted account is announced.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import structlog
from tweetshop_contracts import BuyerCredentialIssued, BuyerCredentialsRevoked, BuyerDeleted

PRODUCER = "checkout"
# Hashes per BuyerCredentialsRevoked (the event's limit): a buyer with more devices gets several events.
REVOKED_PER_EVENT = 1000


def correlation_id() -> str:
    """The request's correlation id (bound by the HTTP middleware), or a fresh one."""
    found = structlog.contextvars.get_contextvars().get("correlation_id")
    return str(found)[:200] if found else str(uuid.uuid4())


def issued(buyer_id: str, credential_sha256: str) -> BuyerCredentialIssued:
    """A credential of ``buyer_id`` now works (a new buyer's first, or a linked device's)."""
    return BuyerCredentialIssued(
        producer=PRODUCER, correlation_id=correlation_id(), buyer_id=buyer_id, credential_sha256=credential_sha256
    )


def revoked(buyer_id: str, hashes: Sequence[str]) -> list[BuyerCredentialsRevoked]:
    """These credentials of ``buyer_id`` stopped working: one event per ``REVOKED_PER_EVENT`` hashes (one, empty,
    when there were none)."""
    correlation = correlation_id()
    chunks = [list(hashes[i : i + REVOKED_PER_EVENT]) for i in range(0, len(hashes), REVOKED_PER_EVENT)] or [[]]
    return [
        BuyerCredentialsRevoked(
            producer=PRODUCER, correlation_id=correlation, buyer_id=buyer_id, credential_sha256s=chunk
        )
        for chunk in chunks
    ]


def deleted(buyer_id: str) -> BuyerDeleted:
    """The account is gone: every credential of it is dead, readers erase what they keep of the buyer."""
    return BuyerDeleted(producer=PRODUCER, correlation_id=correlation_id(), buyer_id=buyer_id)
