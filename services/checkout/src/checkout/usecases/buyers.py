"""Buyer accounts: create one, who a credential is, link another device with a code, sign out everywhere, the
buyer's orders. The rules (codes, credentials, the vault, cursors) are in ``checkout.accounts``.

Every buyer-owned resource answers the same way: no credential 401 (``bearer_token``), an unknown or revoked
credential 401, another buyer's resource 404 (whether it exists is private).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog
from limits.strategies import SlidingWindowCounterRateLimiter
from tweetshop_contracts import utc_now
from tweetshop_platform.errors import DomainError, NotFound, TooManyRequests, Unauthorized
from tweetshop_platform.ratelimit import SweptMemoryStorage, parse_limit
from tweetshop_platform.uow import unit_of_work

from .. import accounts, buyer_events, repository
from ..domain import Order

log = structlog.get_logger(__name__)

# Handles are drawn again this many times when another buyer's live code has the same one (1 in 2**20 each).
_HANDLE_DRAWS = 8


@dataclass(frozen=True)
class Account:
    """The buyer a presented credential stands for, with the vault key that credential opens."""

    id: str
    created_at: datetime
    devices: int
    vault_key: str


@dataclass(frozen=True)
class Issued:
    """A credential answered once (creation or a linked device)."""

    account: Account
    credential: str


def _refused() -> Unauthorized:
    return Unauthorized(
        "unknown or revoked buyer credential: create a buyer (POST /buyers) or link this device with a code",
        code="invalid_buyer_credential",
    )


async def authenticate(conn: asyncpg.Connection, credential: str) -> Account:
    """The buyer of a live credential; 401 when it is not one (unknown, revoked, not a buyer credential)."""
    if not accounts.is_buyer_credential(credential) or len(credential) > 200:
        raise _refused()
    token_hash = accounts.credential_hash(credential)
    row = await repository.buyer_by_credential(conn, token_hash)
    if row is None:
        raise _refused()
    vault_key = accounts.unseal(row.vault_sealed, credential, accounts.vault_context_of_credential(token_hash))
    if vault_key is None:  # cannot happen unless the row was tampered with
        raise _refused()
    return Account(row.id, row.created_at, row.devices, vault_key)


async def authenticate_pool(pool: asyncpg.Pool, credential: str) -> Account:
    async with pool.acquire() as conn:
        return await authenticate(conn, credential)


def _vault_for(credential: str, vault_key: str) -> tuple[str, str]:
    """A credential's hash and the vault key sealed with it."""
    token_hash = accounts.credential_hash(credential)
    return token_hash, accounts.seal(vault_key, credential, accounts.vault_context_of_credential(token_hash))


async def create_buyer(pool: asyncpg.Pool) -> Issued:
    """A new buyer and the credential of its first device (answered once, stored hashed)."""
    buyer_id = accounts.new_buyer_id()
    vault_key = accounts.new_vault_key()
    credential, _ = accounts.new_credential()
    token_hash, sealed = _vault_for(credential, vault_key)
    async with unit_of_work(pool) as uow:
        created_at = await repository.insert_buyer(uow.conn, buyer_id, token_hash, sealed)
        uow.publish(buyer_events.issued(buyer_id, token_hash))  # feed checks the credential with it
    log.info("buyer created", buyer_id=buyer_id)
    return Issued(Account(buyer_id, created_at, 1, vault_key), credential)


async def new_link_code(pool: asyncpg.Pool, credential: str) -> accounts.LinkCode:
    """A code another device can trade for a credential of this buyer; it replaces the buyer's previous one."""
    async with unit_of_work(pool) as uow:
        account = await authenticate(uow.conn, credential)
        for _ in range(_HANDLE_DRAWS):
            code = accounts.new_link_code(utc_now())
            sealed = accounts.seal(account.vault_key, code.code, accounts.vault_context_of_link_code(code.code_hash))
            if await repository.replace_link_code(
                uow.conn, account.id, code.handle, code.code_hash, sealed, code.expires_at
            ):
                log.info("link code issued", buyer_id=account.id, expires_at=code.expires_at.isoformat())
                return code
    raise DomainError("no link code could be drawn; try again", code="link_code_unavailable", status=503)


class LinkGuard:
    """Wrong link codes from every client together (``link_code_failures_limit``): past the limit, linking answers
    429 to everyone for a while, so guessing from many addresses at once stays bounded. In this process's memory
    (with several replicas, each counts its own)."""

    _KEY = "link-code-failures"

    def __init__(self, limit: str) -> None:
        self._items = parse_limit(limit, "link_code_failures_limit")
        self._strategy = SlidingWindowCounterRateLimiter(SweptMemoryStorage())

    def check(self) -> None:
        """429 while the wrong guesses of the window are used up."""
        for item in self._items:
            if not self._strategy.test(item, self._KEY):
                reset = self._strategy.get_window_stats(item, self._KEY).reset_time
                raise TooManyRequests(
                    "too many wrong link codes lately; linking devices is paused for a while, try again later",
                    code="link_codes_paused",
                    retry_after_s=max(1, math.ceil(reset - time.time())),
                )

    def failed(self) -> None:
        """Count one wrong guess."""
        for item in self._items:
            self._strategy.hit(item, self._KEY)


def _wrong_code() -> Unauthorized:
    # One answer for every way a code fails (unknown, expired, used, burnt, wrong): a guess learns nothing.
    return Unauthorized(
        "this code is wrong, expired or already used: ask your other device for a new one",
        code="invalid_link_code",
    )


async def link_device(pool: asyncpg.Pool, typed_code: str, guard: LinkGuard | None = None) -> Issued:
    """Trade a live link code for a new credential of its buyer: the code is then gone (used once).

    A wrong guess at a live code's handle counts against it, and burns it at ``LINK_CODE_MAX_FAILURES``; every
    wrong guess counts against ``guard`` (all clients together).
    """
    code = accounts.normalise_link_code(typed_code)
    if guard is not None:
        guard.check()
    handle = code[: accounts.LINK_HANDLE_LENGTH]
    failed: str | None = None
    async with unit_of_work(pool) as uow:
        found = await repository.take_link_code(uow.conn, handle)
        if found is None:
            if guard is not None:
                guard.failed()
            raise _wrong_code()
        if not accounts.link_code_live(found.expires_at, utc_now()):
            await repository.delete_link_code(uow.conn, handle)
            failed = "expired"
        elif not accounts.link_code_matches(code, found.code_hash):
            failures = await repository.count_link_code_failure(uow.conn, handle)
            failed = "wrong"
            if accounts.burns_after(failures):
                await repository.delete_link_code(uow.conn, handle)
                failed = "burnt"
        else:
            await repository.delete_link_code(uow.conn, handle)
            vault_key = accounts.unseal(found.vault_sealed, code, accounts.vault_context_of_link_code(found.code_hash))
            assert vault_key is not None
            credential, _ = accounts.new_credential()
            token_hash, sealed = _vault_for(credential, vault_key)
            await repository.insert_credential(uow.conn, found.buyer_id, token_hash, sealed)
            uow.publish(buyer_events.issued(found.buyer_id, token_hash))
            account = await authenticate(uow.conn, credential)
    if failed is not None:
        # Committed: the wrong guess is counted (or the dead code cleared) even though the answer is an error.
        log.info("link code refused", outcome=failed)
        if guard is not None:
            guard.failed()
        raise _wrong_code()
    log.info("device linked", buyer_id=account.id, devices=account.devices)
    return Issued(account, credential)


async def sign_out_everywhere(pool: asyncpg.Pool, credential: str) -> int:
    """Revoke every credential (and the live link code) of the buyer; how many devices were signed out."""
    async with unit_of_work(pool) as uow:
        account = await authenticate(uow.conn, credential)
        hashes = await repository.credential_hashes(uow.conn, account.id)
        revoked = await repository.revoke_credentials(uow.conn, account.id)
        uow.publish(*buyer_events.revoked(account.id, hashes))  # by hash: feed never takes one back
    log.info("buyer signed out everywhere", buyer_id=account.id, devices=revoked)
    return revoked


def order_token(account: Account, order_id: uuid.UUID, vaulted: str | None) -> str:
    """The order's own access token, opened from the buyer's vault ("" when the order has none vaulted)."""
    if vaulted is None:
        return ""
    return accounts.unseal(vaulted, account.vault_key, accounts.order_token_context(order_id)) or ""


def vault_order_token(account: Account, order_id: uuid.UUID, access_token: str) -> str:
    """What is stored for an account's order: its access token sealed with the buyer's vault key."""
    return accounts.seal(access_token, account.vault_key, accounts.order_token_context(order_id))


async def authorize_order(conn: asyncpg.Connection, order_id: uuid.UUID, credential: str) -> str:
    """401 unless the credential is live; 404 unless the order is this buyer's. The order's access token (for its
    tracking link), or "" when it cannot be opened."""
    account = await authenticate(conn, credential)
    found = await repository.get_order_account(conn, order_id)
    if found is None or found[0] != account.id:
        raise NotFound("no such order (or not yours)", code="order_not_found")
    return order_token(account, order_id, found[1])


async def orders_page(
    pool: asyncpg.Pool, credential: str, *, limit: int, cursor: str | None
) -> tuple[list[tuple[Order, str]], str | None]:
    """One page of the buyer's orders, newest first, each with its access token; the next page's cursor."""
    after = accounts.decode_cursor(cursor) if cursor is not None else None
    async with pool.acquire() as conn:
        account = await authenticate(conn, credential)
        rows = await repository.orders_of_account(
            conn,
            account.id,
            limit=limit + 1,  # one more tells whether another page exists, without a count
            before=(after.created_at, after.order_id) if after else None,
        )
    page = [(order, order_token(account, order.id, vaulted)) for order, vaulted in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1][0]
        next_cursor = accounts.encode_cursor(accounts.OrderCursor(last.created_at, last.id))
    return page, next_cursor
