"""Keyset cursors: a position survives the round trip to the microsecond; anything else is a 422."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from tweetshop_platform.cursors import MAX_CURSOR_CHARS, decode_keyset, encode_keyset
from tweetshop_platform.errors import Unprocessable


def test_a_position_comes_back_exactly() -> None:
    at, row = datetime(2026, 12, 2, 13, 30, 0, 123456, tzinfo=UTC), uuid.uuid4()
    assert decode_keyset("o1", encode_keyset("o1", at, row)) == (at, row)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not base64 at all!",
        encode_keyset("t1", datetime(2026, 1, 1, tzinfo=UTC), uuid.uuid4()),  # another list's cursor
        "bzE6MTIzOm5vdC1hLXV1aWQ",  # o1:123:not-a-uuid
        "A" * (MAX_CURSOR_CHARS + 1),
    ],
)
def test_anything_but_a_cursor_of_this_list_is_422(value: str) -> None:
    with pytest.raises(Unprocessable) as refused:
        decode_keyset("o1", value)
    assert refused.value.code == "invalid_cursor"
