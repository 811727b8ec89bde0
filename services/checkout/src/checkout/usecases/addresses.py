"""Saved shipping addresses: the buyer's own, kept by checkout (``buyer_addresses``), at most one the default.

Every route answers as the other buyer-owned ones do: no credential 401, an unknown or revoked one 401, another
buyer's address 404 (whether it exists is private). A buyer keeps at most ``MAX_ADDRESSES`` (409 beyond); the
count is taken under the buyer's row lock, so two devices saving at once cannot pass it. The first address saved
is the default; removing the default makes the newest remaining one the default.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog
from tweetshop_platform.errors import Conflict, NotFound, Unauthorized
from tweetshop_platform.uow import unit_of_work

from ..domain import ShippingAddress
from . import buyers

log = structlog.get_logger(__name__)

MAX_ADDRESSES = 20

_COLUMNS = "id, name, line1, city, country, lat, lon, is_default, created_at"


@dataclass(frozen=True, slots=True)
class SavedAddress:
    id: uuid.UUID
    address: ShippingAddress
    is_default: bool
    created_at: datetime


def _of(row: asyncpg.Record) -> SavedAddress:
    address = ShippingAddress(
        name=row["name"], line1=row["line1"], city=row["city"], country=row["country"], lat=row["lat"], lon=row["lon"]
    )
    return SavedAddress(row["id"], address, row["is_default"], row["created_at"])


def _no_such_address() -> NotFound:
    # One answer for an address that does not exist and another buyer's: whether it exists is private.
    return NotFound("no such saved address (or not yours)", code="address_not_found")


async def _list(conn: asyncpg.Connection, buyer_id: str) -> list[SavedAddress]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM buyer_addresses WHERE buyer_id = $1 ORDER BY is_default DESC, created_at DESC, id",
        buyer_id,
    )
    return [_of(row) for row in rows]


async def _lock_buyer(conn: asyncpg.Connection, buyer_id: str) -> None:
    """Serialises one buyer's address changes (the cap, the single default); a buyer deleted meanwhile: 401."""
    if await conn.fetchval("SELECT id FROM buyers WHERE id = $1 FOR UPDATE", buyer_id) is None:
        raise Unauthorized("this buyer account was just deleted", code="invalid_buyer_credential")


async def list_addresses(pool: asyncpg.Pool, credential: str) -> list[SavedAddress]:
    """The buyer's saved addresses, the default first, then the newest."""
    async with pool.acquire() as conn:
        account = await buyers.authenticate(conn, credential)
        return await _list(conn, account.id)


async def save_address(
    pool: asyncpg.Pool, credential: str, address: ShippingAddress, *, make_default: bool
) -> SavedAddress:
    """Save an address for the buyer (the default when asked, or when it is the buyer's first); 409 at the cap."""
    async with unit_of_work(pool) as uow:
        account = await buyers.authenticate(uow.conn, credential)
        await _lock_buyer(uow.conn, account.id)
        count = await uow.conn.fetchval("SELECT count(*) FROM buyer_addresses WHERE buyer_id = $1", account.id)
        if count >= MAX_ADDRESSES:
            raise Conflict(f"at most {MAX_ADDRESSES} saved addresses: remove one first", code="too_many_addresses")
        is_default = make_default or count == 0
        if is_default:
            await uow.conn.execute(
                "UPDATE buyer_addresses SET is_default = false WHERE buyer_id = $1 AND is_default", account.id
            )
        row = await uow.conn.fetchrow(
            "INSERT INTO buyer_addresses (id, buyer_id, name, line1, city, country, lat, lon, is_default) "
            f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_COLUMNS}",
            uuid.uuid4(),
            account.id,
            address.name,
            address.line1,
            address.city,
            address.country,
            address.lat,
            address.lon,
            is_default,
        )
    log.info("address saved", buyer_id=account.id, is_default=is_default)
    return _of(row)


async def make_default(pool: asyncpg.Pool, credential: str, address_id: uuid.UUID) -> list[SavedAddress]:
    """Make one of the buyer's addresses the default; 404 unless it is theirs. The buyer's addresses after it."""
    async with unit_of_work(pool) as uow:
        account = await buyers.authenticate(uow.conn, credential)
        await _lock_buyer(uow.conn, account.id)
        mine = await uow.conn.fetchval(
            "SELECT id FROM buyer_addresses WHERE id = $1 AND buyer_id = $2", address_id, account.id
        )
        if mine is None:
            raise _no_such_address()
        await uow.conn.execute(
            "UPDATE buyer_addresses SET is_default = false WHERE buyer_id = $1 AND is_default AND id <> $2",
            account.id,
            address_id,
        )
        await uow.conn.execute("UPDATE buyer_addresses SET is_default = true WHERE id = $1", address_id)
        return await _list(uow.conn, account.id)


async def remove_address(pool: asyncpg.Pool, credential: str, address_id: uuid.UUID) -> None:
    """Remove one of the buyer's addresses; 404 unless it is theirs. Removing the default makes the newest
    remaining one the default."""
    async with unit_of_work(pool) as uow:
        account = await buyers.authenticate(uow.conn, credential)
        await _lock_buyer(uow.conn, account.id)
        was_default = await uow.conn.fetchval(
            "DELETE FROM buyer_addresses WHERE id = $1 AND buyer_id = $2 RETURNING is_default", address_id, account.id
        )
        if was_default is None:
            raise _no_such_address()
        if was_default:
            await uow.conn.execute(
                "UPDATE buyer_addresses SET is_default = true WHERE id = (SELECT id FROM buyer_addresses "
                "WHERE buyer_id = $1 ORDER BY created_at DESC, id LIMIT 1)",
                account.id,
            )
    log.info("address removed", buyer_id=account.id)
