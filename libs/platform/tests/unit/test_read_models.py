"""The read-model rules build one statement each, from safe identifiers only (behaviour: tests/contract)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from tweetshop_platform.read_models import KeyVerifiers, NewestVersionWins


def test_newest_version_wins_is_one_conditional_upsert() -> None:
    rule = NewestVersionWins("products", key="id", columns=("id", "title", "version"))

    assert rule.sql == (
        "INSERT INTO products (id, title, version) VALUES ($1, $2, $3) "
        "ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, version = EXCLUDED.version, updated_at = now() "
        "WHERE products.version < EXCLUDED.version RETURNING true"
    )


def test_a_registration_keeps_a_stored_key_hash_and_a_rotation_replaces_it() -> None:
    rule = KeyVerifiers("merchants", key="id", key_hash="api_key_hash", details=("handle", "name"))

    assert rule.register_sql == (
        "INSERT INTO merchants (id, api_key_hash, handle, name) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (id) DO UPDATE SET api_key_hash = COALESCE(merchants.api_key_hash, EXCLUDED.api_key_hash), "
        "handle = EXCLUDED.handle, name = EXCLUDED.name, updated_at = now()"
    )
    assert rule.rotate_sql == (
        "INSERT INTO merchants (id, api_key_hash) VALUES ($1, $2) "
        "ON CONFLICT (id) DO UPDATE SET api_key_hash = EXCLUDED.api_key_hash, updated_at = now()"
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda: NewestVersionWins("products; DROP TABLE x", key="id", columns=("id", "version")),
        lambda: NewestVersionWins("products", key="id", columns=("id", "Version")),
        lambda: NewestVersionWins("products", key="id", columns=("id", "title")),  # no version column
        lambda: KeyVerifiers("merchants", key="id", key_hash="hash", details=("name--",)),
    ],
)
def test_only_plain_identifiers_and_complete_columns_are_accepted(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        build()


class _Recorder:
    """Stands in for a connection: keeps the arguments of each statement."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    async def fetchval(self, sql: str, *args: object) -> object:
        self.calls.append(args)
        return True


@dataclass(frozen=True)
class _Product:
    title: str
    version: int
    id: int
    shown: bool = True  # not a column: ignored


async def test_a_state_is_a_mapping_or_an_object_with_one_value_per_column() -> None:
    rule = NewestVersionWins("products", key="id", columns=("id", "title", "version"))
    conn = _Recorder()

    assert await rule.upsert(conn, {"version": 2, "id": 1, "title": "Mug", "extra": "ignored"})  # type: ignore[arg-type]
    assert await rule.upsert(conn, _Product(title="Mug", version=2, id=1))  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="title"):
        await rule.upsert(conn, {"id": 1, "version": 2})  # type: ignore[arg-type]

    assert conn.calls == [(1, "Mug", 2), (1, "Mug", 2)]
