"""Buyer accounts without passwords: credentials, device link codes, the vault, order cursors. Pure, no I/O.

A buyer is an opaque id (``ba_<32 hex>``). Each device holds a **credential** (``tsb_…``, a bearer token of
256 random bits): only its SHA-256 is stored, as for merchant keys and order access tokens.

**Link codes** let a signed-in device bring in another: the first device asks for a code (8 characters from an
alphabet without look-alikes, shown as ``ABCD-EFGH``), the buyer types it on the second device, which gets a
credential of its own. The first four characters find the code (``handle``); the whole code is stored only as
its SHA-256. A code lives 10 minutes, is used once, and a few wrong guesses at one handle burn it. The odds of
guessing are in ``docs/topics.md`` ("Buyer accounts") and checkout's ``POST /buyers/link`` description: each
guess hits a live code with probability (live codes) / 32**8 = (live codes) / 2**40.

**The vault** keeps the tracking link of an account's orders reachable from any of its devices without storing
any order's access token in the clear: each buyer has a random vault key that is stored only sealed with each
of its credentials (and, for 10 minutes, with its live link code); an order placed with a credential keeps its
access token sealed with the vault key. Whoever reads the database learns neither; a device presenting its
credential opens the vault, then each order's token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tweetshop_platform.auth import hash_secret
from tweetshop_platform.cursors import decode_keyset, encode_keyset
from tweetshop_platform.errors import Unprocessable

CREDENTIAL_PREFIX = "tsb"
BUYER_ID_PREFIX = "ba_"
BUYER_ID = re.compile(r"^ba_[0-9a-f]{32}$")
# Digits and capitals without 0/O, 1/I: 32 symbols, 5 bits each. Typed codes are upper-cased, and spaces and
# dashes are dropped, so "abcd efgh" and "ABCD-EFGH" are the same code.
LINK_CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
LINK_CODE_LENGTH = 8
LINK_HANDLE_LENGTH = 4
LINK_CODE_TTL = timedelta(minutes=10)
# Wrong guesses at one live code (its handle right, the rest wrong) before it is burnt.
LINK_CODE_MAX_FAILURES = 5
_TYPED_CODE = re.compile(r"^[A-Za-z0-9\s-]{1,32}$")


def new_buyer_id() -> str:
    """A fresh opaque buyer id: no personal data, nothing to guess from."""
    return BUYER_ID_PREFIX + uuid.uuid4().hex


def is_account_buyer_id(buyer_id: str) -> bool:
    """Whether a buyer id is of the accounts' form (an anonymous order may not claim one)."""
    return buyer_id.startswith(BUYER_ID_PREFIX)


def new_credential(now: datetime | None = None) -> tuple[str, str]:
    """A fresh buyer credential and the hash to store instead of it.

    ``tsb_<12 hex digits>.<43 random characters>``: the hex digits are its birth in Unix milliseconds, so a
    service that learns credentials from checkout.buyers.v1 (feed) can tell "issued moments ago, its event is on
    the way: retry" (503) from "unknown" (401) without a lookup. The secret is the 256 random bits; the birth is no
    secret and lets no one in. Credentials of the first form (``tsb_<43 random characters>``) keep working.
    """
    born_ms = ((now or datetime.now(UTC)) - _EPOCH) // timedelta(milliseconds=1)
    credential = f"{CREDENTIAL_PREFIX}_{born_ms:012x}.{secrets.token_urlsafe(32)}"
    return credential, hash_secret(credential)


def is_buyer_credential(token: str) -> bool:
    """Whether a bearer token is meant as a buyer credential (rather than an order's access token)."""
    return token.startswith(CREDENTIAL_PREFIX + "_")


def credential_hash(token: str) -> str:
    """What is stored, and looked up, for a credential."""
    return hash_secret(token)


# --- link codes --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkCode:
    """A fresh code: what the buyer reads (``display``), what finds it (``handle``), what is stored (``code_hash``)."""

    code: str
    handle: str
    code_hash: str
    expires_at: datetime

    @property
    def display(self) -> str:
        """``ABCD-EFGH``: easier to read out and type."""
        return f"{self.code[:LINK_HANDLE_LENGTH]}-{self.code[LINK_HANDLE_LENGTH:]}"


def link_code_hash(code: str) -> str:
    """The stored form of a normalised code."""
    return hashlib.sha256(b"buyer-link-code:" + code.encode()).hexdigest()


def new_link_code(now: datetime) -> LinkCode:
    """A random code, valid for ``LINK_CODE_TTL`` from ``now``."""
    code = "".join(secrets.choice(LINK_CODE_ALPHABET) for _ in range(LINK_CODE_LENGTH))
    return LinkCode(code, code[:LINK_HANDLE_LENGTH], link_code_hash(code), now + LINK_CODE_TTL)


def normalise_link_code(typed: str) -> str:
    """The code as typed, upper-cased without spaces and dashes; 422 when it cannot be a code.

    The message never echoes what was typed.
    """
    invalid = Unprocessable(
        f"a link code is {LINK_CODE_LENGTH} letters and digits, as shown on your other device (e.g. ABCD-EFGH)",
        code="invalid_link_code",
    )
    if not _TYPED_CODE.match(typed):
        raise invalid
    code = re.sub(r"[\s-]", "", typed).upper()
    if len(code) != LINK_CODE_LENGTH or any(c not in LINK_CODE_ALPHABET for c in code):
        raise invalid
    return code


def link_code_matches(code: str, stored_hash: str) -> bool:
    """Constant-time comparison of a normalised code with a stored hash."""
    return hmac.compare_digest(link_code_hash(code), stored_hash)


def burns_after(failed_attempts: int) -> bool:
    """Whether a code with this many wrong guesses is burnt."""
    return failed_attempts >= LINK_CODE_MAX_FAILURES


def link_code_live(expires_at: datetime, now: datetime) -> bool:
    """Whether a code is still in time."""
    return now < expires_at


# --- the vault ---------------------------------------------------------------------------------------------


def new_vault_key() -> str:
    """A buyer's random vault key (never stored in the clear)."""
    return secrets.token_urlsafe(32)


def _keystream(key: str, context: str, length: int) -> bytes:
    # HMAC-SHA256 in counter mode; each (key, context) pair seals one value only.
    stream = b""
    counter = 0
    while len(stream) < length:
        stream += hmac.new(key.encode(), f"{context}:{counter}".encode(), hashlib.sha256).digest()
        counter += 1
    return stream[:length]


def _tag(key: str, context: str, raw: bytes) -> bytes:
    return hmac.new(key.encode(), b"tag:" + context.encode() + b":" + raw, hashlib.sha256).digest()[:16]


def seal(value: str, key: str, context: str) -> str:
    """``value`` encrypted and authenticated with ``key`` for ``context`` (a unique label of what it is)."""
    raw = value.encode()
    sealed = bytes(a ^ b for a, b in zip(raw, _keystream(key, context, len(raw)), strict=True))
    return base64.urlsafe_b64encode(_tag(key, context, sealed) + sealed).decode()


def unseal(sealed: str, key: str, context: str) -> str | None:
    """The value ``seal`` sealed with the same key and context; None when the key is not the one."""
    try:
        blob = base64.urlsafe_b64decode(sealed.encode())
    except (binascii.Error, ValueError):
        return None
    tag, body = blob[:16], blob[16:]
    if not hmac.compare_digest(tag, _tag(key, context, body)):
        return None
    raw = bytes(a ^ b for a, b in zip(body, _keystream(key, context, len(body)), strict=True))
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


def vault_context_of_credential(credential_hash_hex: str) -> str:
    return f"vault-credential:{credential_hash_hex}"


def vault_context_of_link_code(code_hash_hex: str) -> str:
    return f"vault-link-code:{code_hash_hex}"


def order_token_context(order_id: uuid.UUID) -> str:
    return f"order-access-token:{order_id}"


# --- "my orders": keyset pages, newest first ---------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR_PREFIX = "o1"


@dataclass(frozen=True)
class OrderCursor:
    """Position in a buyer's orders: the last order seen; the next page starts strictly after (older than) it."""

    created_at: datetime
    order_id: uuid.UUID


def encode_cursor(cursor: OrderCursor) -> str:
    """An opaque, URL-safe string for a position (``tweetshop_platform.cursors``)."""
    return encode_keyset(_CURSOR_PREFIX, cursor.created_at, cursor.order_id)


def decode_cursor(value: str) -> OrderCursor:
    """The position an ``encode_cursor`` string stands for, or 422 when it is not one."""
    return OrderCursor(*decode_keyset(_CURSOR_PREFIX, value))
