"""Request bodies whose text Postgres can store: a NUL or a lone surrogate is a 422, never a 500.

JSON may carry ``"\\u0000"`` or half of a UTF-16 surrogate pair (``"\\ud800"``); Python decodes both, but
Postgres refuses a NUL in text (``invalid byte sequence for encoding "UTF8": 0x00``) and a lone surrogate
cannot be encoded to UTF-8 at all, so either failed deep in a use case with a 500.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, field_validator


def check_storable_text(value: str) -> str:
    """``value`` when it is text every store and consumer accepts; ValueError (never echoing it) otherwise."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogate)") from None
    return value


def _check_strings(value: Any) -> Any:
    if isinstance(value, str):
        check_storable_text(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(k)
            _check_strings(v)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            _check_strings(v)
    return value


class RequestBody(BaseModel):
    """Base of request bodies: every string field (in lists and dicts too) is storable text."""

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        return _check_strings(value)
