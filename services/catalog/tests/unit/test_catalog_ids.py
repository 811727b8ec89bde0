"""Merchant and product ids: UUIDv7, so feed can read from an id it does not know yet that it is brand new."""

from __future__ import annotations

import time
import uuid

from catalog.domain import new_id


def test_a_new_id_is_a_plain_uuid_of_version_7_and_rfc_9562s_variant() -> None:
    minted = new_id()

    assert type(minted) is uuid.UUID  # what asyncpg, pydantic and the contract take as they always did
    assert minted.version == 7 and minted.variant == uuid.RFC_4122
    assert uuid.UUID(str(minted)) == minted


def test_a_new_id_carries_the_millisecond_it_was_minted_in_its_first_48_bits() -> None:
    before_ms = time.time_ns() // 1_000_000
    minted = new_id()
    after_ms = time.time_ns() // 1_000_000

    assert before_ms <= minted.int >> 80 <= after_ms


def test_new_ids_are_distinct_and_in_minting_order() -> None:
    minted = [new_id() for _ in range(1000)]

    assert len(set(minted)) == len(minted)
    assert minted == sorted(minted)  # a counter orders those minted within one millisecond
