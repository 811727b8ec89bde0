"""Every read model of checkout.buyers.v1 ends in the same state whatever order the events arrive in.

A buyer credential's verifier is a fact about one hash: an issue adds it live unless the hash is known or the
buyer deleted; a revocation marks each hash it names revoked (creating it when its issue has not arrived yet),
and nothing marks one live again; a deletion removes the buyer's hashes and follows and remembers the buyer. So
every order of arrival of the same events (an at-least-once re-publish, a dead letter redriven later) gives the
same verifiers: a revoked credential, or a deleted buyer's, never comes back.

Each read model is driven through its service's own handler (``tweetshop_cli.groups.READ_MODELS``), in its own
schema with its migrations applied, on a real Postgres.
"""

from __future__ import annotations

import importlib
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources

import asyncpg
import pytest
import pytest_asyncio
from tweetshop_cli.groups import READ_MODELS, ReadModel
from tweetshop_contracts import (
    BuyerCredentialIssued,
    BuyerCredentialsRevoked,
    BuyerDeleted,
    Envelope,
    topics,
    topology,
)
from tweetshop_devstack.pytest_plugin import ScratchDatabase
from tweetshop_platform import db

BUYER_MODELS = sorted(name for name, m in READ_MODELS.items() if m.topic == topics.CHECKOUT_BUYERS)


def test_every_reliable_consumer_of_the_buyers_topic_has_its_read_model_held_to_the_rules() -> None:
    consumers = {c.service for c in topology.topic_spec(topics.CHECKOUT_BUYERS).consumers if not c.fan_out}
    assert consumers == {READ_MODELS[name].service for name in BUYER_MODELS}
    assert BUYER_MODELS


@dataclass
class Model:
    read_model: ReadModel
    pool: asyncpg.Pool
    handler: Callable[[asyncpg.Connection, Envelope], Awaitable[None]]

    async def handle(self, events: Sequence[Envelope]) -> None:
        for event in events:
            async with self.pool.acquire() as conn, conn.transaction():
                await self.handler(conn, event)

    async def state(self) -> set[tuple[str, str, bool]]:
        schema = self.read_model.service
        rows = await self.pool.fetch(f"SELECT credential_sha256, buyer_id, revoked FROM {schema}.buyer_credentials")
        return {(r["credential_sha256"], r["buyer_id"], r["revoked"]) for r in rows}

    async def reset(self) -> None:
        await self.pool.execute(f"TRUNCATE {', '.join(self.read_model.tables)}")


@pytest_asyncio.fixture
async def model(request: pytest.FixtureRequest, database: ScratchDatabase) -> AsyncIterator[Model]:
    read_model = READ_MODELS[request.param]
    service = read_model.service
    dsn = await database.provision(service)
    pool = await db.create_pool(dsn, service)
    try:
        own = db.load_migrations(service, resources.files(service) / "migrations")
        await db.apply_migrations(pool, service, db.platform_migrations() + own)
        module, function = read_model.handler.split(":")
        yield Model(read_model, pool, getattr(importlib.import_module(module), function))
    finally:
        await pool.close()


def _hash() -> str:
    return uuid.uuid4().hex * 2


def _issued(buyer_id: str, digest: str) -> BuyerCredentialIssued:
    return BuyerCredentialIssued(
        producer="checkout", correlation_id="rules", buyer_id=buyer_id, credential_sha256=digest
    )


@pytest.mark.parametrize("model", BUYER_MODELS, indirect=True)
async def test_issue_and_revocation_in_every_order_end_revoked_and_other_credentials_stay_live(model: Model) -> None:
    buyer = f"ba_{uuid.uuid4().hex}"
    revoked, kept = _hash(), _hash()
    events: list[Envelope] = [
        _issued(buyer, revoked),
        BuyerCredentialsRevoked(
            producer="checkout", correlation_id="rules", buyer_id=buyer, credential_sha256s=[revoked]
        ),
        _issued(buyer, kept),  # a device linked after the sign-out
    ]
    for order in itertools.permutations(events):
        await model.reset()
        await model.handle([*order, order[0]])  # and the first one again, as a re-publish
        assert await model.state() == {(revoked, buyer, True), (kept, buyer, False)}, [e.event_type for e in order]


@pytest.mark.parametrize("model", BUYER_MODELS, indirect=True)
async def test_a_deleted_buyer_never_comes_back_whatever_order_its_events_arrive_in(model: Model) -> None:
    buyer, other = f"ba_{uuid.uuid4().hex}", f"ba_{uuid.uuid4().hex}"
    first, second, others = _hash(), _hash(), _hash()
    events: list[Envelope] = [
        _issued(buyer, first),
        _issued(buyer, second),
        BuyerDeleted(producer="checkout", correlation_id="rules", buyer_id=buyer),
    ]
    for order in itertools.permutations(events):
        await model.reset()
        await model.handle([_issued(other, others), *order, order[0]])
        assert await model.state() == {(others, other, False)}, [e.event_type for e in order]
