"""Keyset-page positions as opaque strings: ``(created_at, id)`` of the last row seen, exact to the microsecond.

One format for every list that pages newest first (feed's timeline, checkout's "my orders"): a short prefix
naming the list and its version, the microseconds since the epoch and the id, base64url without padding. A
client passes back the ``next_cursor`` it was given; anything else is a 422 ``invalid_cursor``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime, timedelta

from .errors import Unprocessable

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_CURSOR_CHARS = 200


def encode_keyset(prefix: str, created_at: datetime, row_id: uuid.UUID) -> str:
    """An opaque, URL-safe string for the position after the row ``(created_at, row_id)`` of list ``prefix``."""
    micros = (created_at - _EPOCH) // timedelta(microseconds=1)
    raw = f"{prefix}:{micros}:{row_id.hex}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_keyset(prefix: str, value: str) -> tuple[datetime, uuid.UUID]:
    """The ``(created_at, id)`` an ``encode_keyset(prefix, ...)`` string stands for, or 422 when it is not one
    (another list's cursor included)."""
    invalid = Unprocessable("invalid cursor: pass back the next_cursor of a previous page", code="invalid_cursor")
    if not value or len(value) > MAX_CURSOR_CHARS:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
        found_prefix, micros, row_hex = raw.split(":")
        if found_prefix != prefix:
            raise ValueError(found_prefix)
        return _EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex=row_hex)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise invalid from exc
