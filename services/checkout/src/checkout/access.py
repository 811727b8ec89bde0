"""The buyer's access to an order: the access token, its idempotent replay, the tracking link. Pure.

The access token is stored only as a hash. A client that retries ``POST /orders``
with the same Idempotency-Key (it lost the first answer) must get the same
token back, so the token is also stored sealed with a key derived from the
Idempotency-Key, which is itself stored only as a hash: whoever reads the
database learns neither; whoever repeats the exact request gets the token again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from urllib.parse import quote

from tweetshop_platform.auth import hash_secret, new_secret, secret_matches

__all__ = [
    "hash_secret",
    "idempotency_key_hash",
    "new_access_token",
    "seal_token",
    "secret_matches",
    "tracking_url",
    "unseal_token",
]


def new_access_token() -> tuple[str, str]:
    """A fresh order access token and its hash."""
    return new_secret("tso")


def idempotency_key_hash(key: str) -> str:
    """What is stored (and made unique) instead of the Idempotency-Key itself."""
    return hashlib.sha256(b"idempotency-key:" + key.encode()).hexdigest()


def _keystream(idempotency_key: str, order_id: uuid.UUID, length: int) -> bytes:
    # HMAC-SHA256 in counter mode: a keystream used once (one token per order id).
    stream = b""
    counter = 0
    while len(stream) < length:
        stream += hmac.new(idempotency_key.encode(), f"{order_id}:{counter}".encode(), hashlib.sha256).digest()
        counter += 1
    return stream[:length]


def seal_token(token: str, idempotency_key: str, order_id: uuid.UUID) -> str:
    """The token, readable again only with the Idempotency-Key."""
    raw = token.encode()
    sealed = bytes(a ^ b for a, b in zip(raw, _keystream(idempotency_key, order_id, len(raw)), strict=True))
    return base64.urlsafe_b64encode(sealed).decode()


def unseal_token(sealed: str, idempotency_key: str, order_id: uuid.UUID) -> str:
    """The token sealed by ``seal_token`` with the same key and order."""
    raw = base64.urlsafe_b64decode(sealed.encode())
    return bytes(a ^ b for a, b in zip(raw, _keystream(idempotency_key, order_id, len(raw)), strict=True)).decode()


def tracking_url(tracking_base_url: str, order_id: uuid.UUID, access_token: str) -> str:
    """The buyer's own link to the live map of their parcel."""
    return f"{tracking_base_url.rstrip('/')}/track/{order_id}?token={quote(access_token, safe='')}"
