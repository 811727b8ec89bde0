"""The outbox relay's wake-up: a commit's NOTIFY that arrives while a batch is being published is not lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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


async def run_until(relay: OutboxRelay, until: Callable[[], Awaitable[object]]) -> None:
    """Run the relay until ``until()`` returns (at most 5 s), then stop it."""
    relay.start()
    try:
        await asyncio.wait_for(until(), 5)
    finally:
        await relay.stop()


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
    await run_until(relay, second_round.wait)
    assert rounds >= 2


async def test_the_relay_prunes_published_rows_past_the_retention_now_and_then(monkeypatch: Any) -> None:
    from tweetshop_platform import outbox

    asked: list[float] = []
    pruned = asyncio.Event()

    async def prune_published(_conn: Any, older_than_s: float, **_: Any) -> int:
        asked.append(older_than_s)
        pruned.set()
        return 3

    async def nothing_pending(_conn: Any) -> int:
        return 0

    monkeypatch.setattr(outbox, "prune_published", prune_published)
    relay = OutboxRelay(
        FakePool(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        TopicNames(""),
        "svc",
        poll_interval=0.01,
        retention_s=3600,
        prune_interval_s=0,
    )
    relay.publish_pending = nothing_pending  # type: ignore[method-assign]
    await run_until(relay, pruned.wait)
    assert asked[0] == 3600


async def test_a_retention_of_zero_keeps_every_row(monkeypatch: Any) -> None:
    from tweetshop_platform import outbox

    pruned: list[Any] = []

    async def prune_published(*args: Any, **_: Any) -> int:
        pruned.append(args)  # (the relay would swallow an exception raised here and retry)
        return 0

    monkeypatch.setattr(outbox, "prune_published", prune_published)
    relay = OutboxRelay(FakePool(), None, TopicNames(""), "svc", poll_interval=0.01, prune_interval_s=0)  # type: ignore[arg-type]
    rounds = 0

    async def count_rounds(_conn: Any) -> int:
        nonlocal rounds
        rounds += 1
        return 0

    async def five_rounds() -> None:
        while rounds < 5:
            await asyncio.sleep(0.01)

    relay.publish_pending = count_rounds  # type: ignore[method-assign]
    await run_until(relay, five_rounds)
    assert pruned == [], "retention 0 keeps every published row"


async def test_the_relay_paces_only_after_a_round_that_found_a_partial_batch() -> None:
    """Each commit notifies; under load a round per NOTIFY would store a few events per broker batch. After a round
    that found events, the next waits out the round interval (``_pace``); after one that found none, or a full batch
    (a backlog), it starts as soon as it is woken."""
    relay = OutboxRelay(FakePool(), None, TopicNames(""), "svc", poll_interval=60, batch_size=10, round_interval=0.2)  # type: ignore[arg-type]
    found = [1, 0, 10, 3]  # what each round finds: partial, none, full, partial
    rounds: list[int] = []
    paced_after: list[int] = []
    done = asyncio.Event()

    async def publish_pending(_conn: Any) -> int:
        rounds.append(found[min(len(rounds), len(found) - 1)])
        if len(rounds) > len(found):
            done.set()
        relay._on_notify()  # a commit notifies while each round is out
        return rounds[-1]

    async def pace(_started: float) -> None:
        paced_after.append(rounds[-1])

    relay.publish_pending = publish_pending  # type: ignore[method-assign]
    relay._pace = pace  # type: ignore[method-assign]
    await run_until(relay, done.wait)
    assert rounds[: len(found)] == found
    assert paced_after[:2] == [1, 3], paced_after


async def test_a_paced_round_waits_for_what_is_left_of_the_interval(monkeypatch: Any) -> None:
    relay = OutboxRelay(FakePool(), None, TopicNames(""), "svc", round_interval=0.2)  # type: ignore[arg-type]
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    await relay._pace(time.monotonic() - 0.05)  # the round started 50 ms ago: ~150 ms to wait
    await relay._pace(time.monotonic() - 1)  # idle: the wake-up came after the interval, nothing to wait
    assert len(asked) == 1 and 0.1 < asked[0] <= 0.15, asked
