"""The outbox relay's wake-up: a commit's NOTIFY that arrives while a batch is being published is not lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tweetshop_platform.kafka import TopicNames
from tweetshop_platform.outbox import OutboxRelay


class FakeConnection:
    """Just what the relay's leader loop asks of its connection."""

    async def fetchval(self, *_: Any) -> bool:
        return True  # the relay lock is ours

    async def execute(self, *_: Any) -> None:
        return None

    async def add_listener(self, *_: Any) -> None:
        return None

    async def remove_listener(self, *_: Any) -> None:
        return None

    def get_server_pid(self) -> int:
        return 4242


class FakePool:
    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        yield FakeConnection()


async def test_a_notify_during_a_batch_wakes_the_next_round_at_once() -> None:
    relay = OutboxRelay(FakePool(), None, TopicNames(""), "svc", poll_interval=60)  # type: ignore[arg-type]
    rounds = 0
    second_round = asyncio.Event()

    async def publish_pending(_conn: Any) -> int:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            relay._on_notify()  # another transaction commits (and notifies) while this batch is out
        else:
            second_round.set()
        return 0  # a short batch: the relay would wait for a wake-up or the 60 s poll

    relay.publish_pending = publish_pending  # type: ignore[method-assign]
    relay.start()
    try:
        await asyncio.wait_for(second_round.wait(), 5)
    finally:
        await relay.stop()
    assert rounds >= 2
