"""Bearer secrets: generated once, stored hashed, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

from fastapi import Request
from pydantic import SecretStr

from .errors import Forbidden, Unauthorized


def new_secret(prefix: str) -> tuple[str, str]:
    """A fresh secret for a caller and the hash to store instead of it."""
    secret = f"{prefix}_{secrets.token_urlsafe(32)}"
    return secret, hash_secret(secret)


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a high-entropy secret (no salt needed: the secret itself is random)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def is_operator_key(presented: str, operator_key: SecretStr) -> bool:
    """Whether the presented bearer token is the operator key (constant time)."""
    return hmac.compare_digest(presented.encode(), operator_key.get_secret_value().encode())


def operator_only(operator_key: SecretStr) -> Callable[[Request], None]:
    """A FastAPI dependency (or a plain check): 401 without a bearer token, 403 unless it is the operator key."""

    def check(request: Request) -> None:
        if not is_operator_key(bearer_token(request), operator_key):
            raise Forbidden("not an operator key")

    return check


def bearer_token(request: Request) -> str:
    """The bearer token of the request, or 401 when there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing credentials: send Authorization: Bearer <key>")
    return token.strip()
