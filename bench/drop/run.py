"""The drop benchmark: a merchant sells 300 units through one tweet and 5,000 buyers arrive in 5 seconds.

Phase 1 ("the drop"): a fresh product of ``--stock`` units and its buyable tweet (made through catalog's and
feed's HTTP APIs), ``--buyers`` buyers over ``--seconds`` seconds, open loop, every card good. Held to:
exactly ``stock`` paid, nothing oversold (catalog's ``stock_sold`` ≤ stock), no 5xx, and every buyer a
definitive answer (paid, or sold out at the POST or later). Measured: time from tapping Buy to that answer
(p50/p99, paid and sold-out buyers apart), the order page's and the timeline's p99 (a background reader
at ``--timeline-rate``/s), CPU per order accepted by the POST and per order refused at the POST (above
idle), steal.

Phase 2 ("declines and 3-D Secure"): another fresh product of ``stock`` units, the same burst with 10 % of
cards declined and 5 % needing 3-D Secure that the buyer never completes, then a trickle of late buyers
(``late_rate``/s, good cards) until the 3-D Secure hold (checkout's ``TWEETSHOP_PAYMENT_ACTION_DEADLINE_S``,
shortened to ``--hold-seconds`` for the benchmark) has passed and the reconciler has cancelled the held
orders: how many units came back (declined and expired holds) and were sold again, and paid + still held
== stock at the end.

    python -m bench.drop                       # 5,000 buyers, 300 units, both phases
    python -m bench.drop --tiny                # 60 buyers, 10 units: the smoke size
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tweetshop_contracts import topics
from tweetshop_devstack.seed import following_retry_after, order_body

from bench.common import loop
from bench.common.cpu import CpuMeter, machine_ticks, steal_share
from bench.common.gc_settings import collect_like_the_services
from bench.common.results import RESULTS_DIR, SummaryRow, machine_info, markdown_table, write_json
from bench.common.stack import PRODUCT_PRICE_MINOR, BenchInfra, ServiceStack, stop_on_signals
from bench.common.stats import Latency
from bench.common.watch import TopicWatcher
from bench.drop.buyers import (
    CANCELLED_OTHER,
    DECLINED,
    NEEDS_3DS,
    NO_ANSWER,
    PAID,
    REFUSED_OTHER,
    SERVER_ERROR,
    SOLD_OUT_AT_POST,
    SOLD_OUT_LATER,
    Buyer,
    DropClient,
    OrderNews,
    Requests,
    arrive,
    card_of,
)
from bench.orders.driver import pipeline_meter

SYSTEM_GROUPS = ("services", "postgres", "broker", "stripe")
LATE_MAX_S = 120.0  # phase 2: late buyers stop coming once nothing is left, or after this long


def say(message: str) -> None:
    """Progress on stdout."""
    print(f"bench-drop | {message}", flush=True)


@dataclass
class Options:
    """What a run does."""

    buyers: int = 5000
    seconds: float = 5.0
    stock: int = 300
    second_phase: bool = True
    declined_share: float = 0.10
    three_ds_share: float = 0.05
    hold_s: float = 10.0
    reconcile_s: float = 1.0
    late_rate: float = 20.0
    poll_s: float = 0.0
    timeline_rate: float = 5.0
    refusal_probe: int = 1000
    answer_timeout_s: float = 300.0
    connections: int = 3000
    checkout_replicas: int = 1
    tiny: bool = False
    results_dir: Path = field(default_factory=lambda: RESULTS_DIR)

    @property
    def name(self) -> str:
        """The results file's name."""
        return "drop-tiny" if self.tiny else "drop"


@dataclass
class Product:
    """The product on sale in one phase and the tweet that sells it."""

    product_id: str
    tweet_id: str
    stock: int


def create_product(stack: ServiceStack, stock: int, title: str) -> Product:
    """A product of ``stock`` units and its tweet, through the HTTP APIs, as the stack seeds its own; returns once
    checkout knows it (a probe that would mismatch the seeded tweet answers 422 instead of 404)."""
    assert stack.seeded is not None
    auth = {"Authorization": f"Bearer {stack.seeded.api_key}"}
    with httpx.Client(timeout=15.0) as client:
        product = client.post(
            f"{stack.url('catalog')}/products",
            json={
                "merchant_id": stack.seeded.merchant_id,
                "title": title,
                "price_minor": PRODUCT_PRICE_MINOR,
                "currency": "EUR",
                "stock": stock,
            },
            headers=auth,
        )
        product.raise_for_status()
        product_id = str(product.json()["id"])
        deadline = time.monotonic() + 60
        # feed learns the product from catalog's topics: 503 with Retry-After for a moment.
        body = {"merchant_id": stack.seeded.merchant_id, "text": f"{title}: {stock} only", "product_id": product_id}
        tweet = following_retry_after(
            lambda: client.post(f"{stack.url('feed')}/tweets", json=body, headers=auth), timeout=60
        )
        if tweet.status_code != 201:
            raise RuntimeError(f"posting the tweet failed: {tweet.status_code} {tweet.text[:300]}")
        tweet_id = str(tweet.json()["id"])
        wait_until_checkout_knows(client, stack, product_id, tweet_id, deadline)
    return Product(product_id, tweet_id, stock)


def wait_until_checkout_knows(
    client: httpx.Client, stack: ServiceStack, product_id: str, tweet_id: str, deadline: float
) -> None:
    """Checkout learns products and tweets from catalog's and feed's topics: wait until it knows both, without
    touching the drop product's stock. First the new tweet with the seeded product: 422 (a mismatch) once the
    tweet is known (before, a harmless order of the seeded product). Then the seeded tweet, known by then, with the
    new product: 422 once the product is known, 404 before. Nothing of the new product is ever bought."""
    assert stack.seeded is not None
    url = f"{stack.url('checkout')}/orders"
    for tweet, product in ((tweet_id, stack.seeded.product_id), (stack.seeded.tweet_id, product_id)):
        while True:
            probe = client.post(
                url,
                json=order_body(tweet, product, buyer_id="drop-probe"),
                headers={"Idempotency-Key": f"drop-probe-{uuid.uuid4().hex}"},
            )
            if probe.status_code == 422 and probe.json().get("error") == "tweet_product_mismatch":
                break
            if product == product_id and probe.status_code != 404:
                raise RuntimeError(f"the probe of checkout answered {probe.status_code} {probe.text[:300]}")
            if probe.status_code not in (404, 200, 202) or time.monotonic() > deadline:
                raise RuntimeError(f"checkout does not know the tweet/product: {probe.status_code} {probe.text[:300]}")
            time.sleep(0.2)


async def catalog_stock(stack: ServiceStack, product_id: str) -> dict[str, int]:
    """Catalog's own account of the product: available, reserved, sold."""
    async with httpx.AsyncClient(timeout=15.0) as client:
        response = await client.get(f"{stack.url('catalog')}/products/{product_id}")
        response.raise_for_status()
        body = response.json()
    return {k: int(body[k]) for k in ("stock_available", "stock_reserved", "stock_sold")}


async def wait_catalog(stack: ServiceStack, product_id: str, paid: int, timeout: float = 60.0) -> dict[str, int]:
    """Catalog's stock once it has counted every sale we saw paid (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        stock = await catalog_stock(stack, product_id)
        if stock["stock_sold"] >= paid or time.monotonic() > deadline:
            return stock
        await asyncio.sleep(0.3)


def latency(values: Sequence[float | None]) -> dict[str, Any]:
    """p50/p95/p99 of the values present, in ms."""
    return Latency.of_seconds([v for v in values if v is not None]).as_dict()


def marginal(cpu_s: dict[str, float], idle: dict[str, float], window_s: float) -> dict[str, float]:
    """CPU seconds above what the same processes burn idle over ``window_s``."""
    return {k: max(0.0, v - idle.get(k, 0.0) * window_s) for k, v in cpu_s.items()}


@dataclass
class Phase:
    """One run of buyers against one product, with everything measured on the way."""

    label: str
    product: Product
    buyers: list[Buyer]
    news: OrderNews
    requests: Requests
    window_s: float
    cpu_s: dict[str, float]
    steal: float | None
    lag_p99_ms: float
    lag_max_ms: float
    send_span_s: float

    def outcomes(self) -> Counter[str]:
        """How many buyers got each answer."""
        return Counter(b.outcome or NO_ANSWER for b in self.buyers)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly counts and latencies."""
        counts = self.outcomes()
        sold_out = [b for b in self.buyers if b.outcome in (SOLD_OUT_AT_POST, SOLD_OUT_LATER)]
        page = self.requests.latencies.get("order_page", [])
        timeline = self.requests.latencies.get("timeline", [])
        post = self.requests.latencies.get("post_order", [])
        return {
            "label": self.label,
            "product_id": self.product.product_id,
            "stock": self.product.stock,
            "buyers": len(self.buyers),
            "outcomes": dict(counts),
            "paid": counts[PAID],
            "sold_out_at_post": counts[SOLD_OUT_AT_POST],
            "sold_out_later": counts[SOLD_OUT_LATER],
            "declined": counts[DECLINED],
            "needs_3ds": counts[NEEDS_3DS],
            "cancelled_other": counts[CANCELLED_OTHER],
            "no_answer": counts[NO_ANSWER] + counts[REFUSED_OTHER] + counts[SERVER_ERROR],
            "accepted_by_post": sum(1 for b in self.buyers if b.order_id is not None),
            "server_errors_5xx": self.requests.server_errors(),
            "transport_errors": dict(self.requests.transport_errors),
            "statuses": {k: {str(s): n for s, n in v.items()} for k, v in self.requests.statuses.items()},
            "to_answer_paid": latency([b.to_answer_s for b in self.buyers if b.outcome == PAID]),
            # The paid buyers' wait in two parts: the POST (tap -> 202), then the paid-order pipeline (202 -> paid).
            "paid_to_accepted": latency([b.to_accepted_s for b in self.buyers if b.outcome == PAID]),
            "paid_accepted_to_answer": latency([b.accepted_to_answer_s for b in self.buyers if b.outcome == PAID]),
            "to_answer_sold_out": latency([b.to_answer_s for b in sold_out]),
            "to_answer_sold_out_at_post": latency(
                [b.to_answer_s for b in self.buyers if b.outcome == SOLD_OUT_AT_POST]
            ),
            "to_answer_sold_out_later": latency([b.to_answer_s for b in self.buyers if b.outcome == SOLD_OUT_LATER]),
            "to_answer_declined": latency([b.to_answer_s for b in self.buyers if b.outcome == DECLINED]),
            "to_answer_needs_3ds": latency([b.to_answer_s for b in self.buyers if b.outcome == NEEDS_3DS]),
            "post": Latency.of_seconds(post).as_dict(),
            "order_page": Latency.of_seconds(page).as_dict(),
            "timeline": Latency.of_seconds(timeline).as_dict(),
            "cancellation_reasons": dict(
                Counter(b.detail for b in self.buyers if b.outcome in (SOLD_OUT_LATER, CANCELLED_OTHER)).most_common(5)
            ),
            "generator_lag_p99_ms": self.lag_p99_ms,
            "generator_lag_max_ms": self.lag_max_ms,
            "send_span_s": round(self.send_span_s, 2),
            "window_s": round(self.window_s, 2),
            "cpu_s": self.cpu_s,
            "steal_share": self.steal,
        }


async def run_buyers(
    label: str,
    stack: ServiceStack,
    infra: BenchInfra,
    product: Product,
    buyers: list[Buyer],
    meter: CpuMeter,
    news: OrderNews,
    opts: Options,
    *,
    enough: Callable[[], Awaitable[bool]] | None = None,
    open_until: float = math.inf,
) -> Phase:
    """The buyers of one phase, a timeline reader beside them, the CPU and steal of the whole window. With
    ``enough``: buyers due after ``open_until`` s stop coming once it answers true (asked every second)."""
    requests = Requests()
    client = DropClient(
        stack.urls("checkout"),
        stack.url("feed"),
        news=news,
        requests=requests,
        poll_s=opts.poll_s,
        answer_timeout_s=opts.answer_timeout_s,
        connections=opts.connections,
    )
    stop = asyncio.Event()
    try:
        cpu_before = meter.snapshot()
        ticks_before = machine_ticks()
        started = time.monotonic()
        reader = asyncio.create_task(client.read_timeline(opts.timeline_rate, stop))

        done = asyncio.Event()
        watcher = asyncio.create_task(_watch_enough(enough, done, started + open_until, stop))

        async def act(buyer: Buyer) -> None:
            await client.buy(buyer, product.product_id, product.tweet_id)

        schedule = await arrive(buyers, act, enough=done, open_until=open_until)
        stop.set()
        await reader
        await watcher
        buyers = [b for b in buyers if b.tapped is not None]
        window_s = time.monotonic() - started
        cpu_s = CpuMeter.delta(cpu_before, meter.snapshot())
        stolen = steal_share(ticks_before, machine_ticks())
    finally:
        stop.set()
        await client.close()
    return Phase(
        label,
        product,
        buyers,
        news,
        requests,
        window_s,
        cpu_s,
        stolen,
        schedule.lag_p99_ms,
        schedule.lag_max_ms,
        schedule.ended - schedule.started,
    )


async def _watch_enough(
    enough: Callable[[], Awaitable[bool]] | None, done: asyncio.Event, not_before: float, stop: asyncio.Event
) -> None:
    if enough is None:
        return
    while not stop.is_set() and not done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        if time.monotonic() >= not_before and await enough():
            done.set()


def make_buyers(
    wave: str, count: int, seconds: float, opts: Options, *, mixed: bool, offset: float = 0.0
) -> list[Buyer]:
    """``count`` buyers due over ``seconds`` from ``offset``; ``mixed``: some cards declined, some need 3-D Secure."""
    rate = count / seconds if seconds > 0 else math.inf
    out = []
    for i in range(count):
        kind, pm = (
            card_of(i, declined_share=opts.declined_share, three_ds_share=opts.three_ds_share)
            if mixed
            else ("card", f"pm_card_visa_{i}")
        )
        out.append(Buyer(i, wave, kind, pm, due=offset + (i / rate if rate != math.inf else 0.0)))
    return out


async def idle_cores(meter: CpuMeter, seconds: float) -> dict[str, float]:
    """CPU cores each group uses with nothing arriving (pollers, fetch loops)."""
    before = meter.snapshot()
    await asyncio.sleep(seconds)
    return {k: round(v / seconds, 4) for k, v in CpuMeter.delta(before, meter.snapshot()).items()}


async def refusal_probe(
    stack: ServiceStack, product: Product, meter: CpuMeter, count: int, rate: float
) -> dict[str, Any]:
    """``count`` buyers of the sold-out product at ``rate``/s: every one refused at the POST. Its CPU is what a
    refusal costs."""
    buyers = [Buyer(i, "probe", "card", f"pm_card_visa_{i}", due=i / rate) for i in range(count)]
    news = OrderNews()
    requests = Requests()
    client = DropClient(
        stack.urls("checkout"),
        stack.url("feed"),
        news=news,
        requests=requests,
        poll_s=1.0,
        answer_timeout_s=10.0,
        connections=1000,
    )
    try:
        before = meter.snapshot()
        started = time.monotonic()

        async def act(buyer: Buyer) -> None:
            await client.buy(buyer, product.product_id, product.tweet_id)

        await arrive(buyers, act)
        window = time.monotonic() - started
        cpu = CpuMeter.delta(before, meter.snapshot())
    finally:
        await client.close()
    return {
        "buyers": count,
        "rate": rate,
        "refused_at_post": sum(1 for b in buyers if b.outcome == SOLD_OUT_AT_POST),
        "window_s": round(window, 2),
        "cpu_s": cpu,
        "post": Latency.of_seconds(requests.latencies.get("post_order", [])).as_dict(),
    }


def cpu_split(
    drop: dict[str, Any], probe: dict[str, Any], idle: dict[str, float]
) -> dict[str, dict[str, float] | None]:
    """CPU ms (services, and services + Postgres + broker + stand-in) per refused and per accepted order, above
    idle: a refusal's cost from the probe; what is left of the drop's CPU over the orders the POST accepted."""
    probe_cpu = marginal(probe["cpu_s"], idle, probe["window_s"])
    refused_n = int(probe["refused_at_post"])
    if refused_n == 0:
        return {"refused_at_post_ms": None, "accepted_ms": None}
    drop_cpu = marginal(drop["cpu_s"], idle, drop["window_s"])
    accepted_n = int(drop["accepted_by_post"])
    refused_in_drop = int(drop["sold_out_at_post"])

    def per(groups: Sequence[str]) -> tuple[float, float | None]:
        refused_ms = sum(probe_cpu.get(g, 0.0) for g in groups) * 1000 / refused_n
        rest = sum(drop_cpu.get(g, 0.0) for g in groups) * 1000 - refused_ms * refused_in_drop
        return refused_ms, (max(0.0, rest) / accepted_n if accepted_n else None)

    services = per(("services",))
    system = per(SYSTEM_GROUPS)
    return {
        "refused_at_post_ms": {"services": round(services[0], 2), "system": round(system[0], 2)},
        "accepted_ms": None
        if services[1] is None or system[1] is None
        else {"services": round(services[1], 2), "system": round(system[1], 2)},
    }


def describe(phase: dict[str, Any]) -> str:
    """One line per phase."""
    paid, sold = phase["to_answer_paid"], phase["to_answer_sold_out"]
    steal = phase.get("steal_share")
    return (
        f"{phase['label']}: {phase['buyers']} buyers, paid {phase['paid']}/{phase['stock']}, sold out "
        f"{phase['sold_out_at_post']} at the POST + {phase['sold_out_later']} later, declined {phase['declined']}, "
        f"3-D Secure {phase['needs_3ds']}, no answer {phase['no_answer']}, 5xx {phase['server_errors_5xx']}; "
        f"to the answer p50/p99 paid {paid['p50_ms']}/{paid['p99_ms']} ms, "
        f"sold out {sold['p50_ms']}/{sold['p99_ms']} ms; "
        f"page p99 {phase['order_page']['p99_ms']} ms, timeline p99 {phase['timeline']['p99_ms']} ms"
        + (f"; steal {steal:.0%}" if steal is not None else "")
    )


async def drive(stack: ServiceStack, infra: BenchInfra, opts: Options) -> dict[str, Any]:
    """Both phases against one running shop."""
    infra_pids = infra.pids()
    meter = pipeline_meter(stack.pids(), infra_pids, infra_pids.get("stripe-standin"))
    out: dict[str, Any] = {}
    # One consumer of checkout.orders.v1 for the whole run, as a buyer's browser would be told (it runs during the
    # idle measurement too, so its fetches are not counted as the orders' cost).
    news = OrderNews()
    watcher = TopicWatcher(infra.kafka_bootstrap, [stack.topic(topics.CHECKOUT_ORDERS)], news.on_record)
    await watcher.start()
    try:
        return await _phases(stack, infra, meter, news, opts, out)
    finally:
        await watcher.stop()


async def _phases(
    stack: ServiceStack, infra: BenchInfra, meter: CpuMeter, news: OrderNews, opts: Options, out: dict[str, Any]
) -> dict[str, Any]:
    product = await asyncio.to_thread(create_product, stack, opts.stock, "Flash drop sneaker")
    out["idle_cores"] = await idle_cores(meter, 2.0 if opts.tiny else 5.0)
    say(f"idle CPU (cores): {out['idle_cores']}")
    say(f"phase 1: {opts.buyers} buyers over {opts.seconds:g} s for {opts.stock} units")
    phase = await run_buyers(
        "drop",
        stack,
        infra,
        product,
        make_buyers("drop", opts.buyers, opts.seconds, opts, mixed=False),
        meter,
        news,
        opts,
    )
    drop = phase.summary()
    drop["catalog"] = await wait_catalog(stack, product.product_id, drop["paid"])
    drop["oversold"] = max(0, drop["catalog"]["stock_sold"] - opts.stock)
    drop["paid_is_stock"] = drop["paid"] == opts.stock
    say(describe(drop))
    say(f"catalog after the drop: {drop['catalog']}")
    probe_n = 30 if opts.tiny else opts.refusal_probe
    probe = await refusal_probe(stack, product, meter, probe_n, 20.0 if opts.tiny else 200.0)
    drop["refusal_probe"] = probe
    drop["cpu_per_order"] = cpu_split(drop, probe, out["idle_cores"])
    say(f"CPU per order above idle (ms): {drop['cpu_per_order']}")
    out["drop"] = drop
    if opts.second_phase:
        out["declines_and_3ds"] = await second_phase(stack, infra, meter, news, opts)
    out["standin"] = await asyncio.to_thread(infra.standin_stats)
    return out


async def second_phase(
    stack: ServiceStack, infra: BenchInfra, meter: CpuMeter, news: OrderNews, opts: Options
) -> dict[str, Any]:
    """A fresh product, the same burst with declined and 3-D Secure cards, late buyers until the hold has passed."""
    product = await asyncio.to_thread(create_product, stack, opts.stock, "Flash drop sneaker, second run")
    late_s = opts.hold_s + 3 * opts.reconcile_s + 5.0
    buyers = make_buyers("mixed", opts.buyers, opts.seconds, opts, mixed=True)
    # The late buyers pay with good cards: they are there to buy what comes back. They keep coming until nothing is
    # left (catalog: none available, none reserved) once the hold has passed, for LATE_MAX_S at most.
    late_n = max(1, round(opts.late_rate * LATE_MAX_S))
    late = make_buyers("late", late_n, LATE_MAX_S, opts, mixed=False, offset=opts.seconds)

    async def nothing_left() -> bool:
        stock = await catalog_stock(stack, product.product_id)
        return stock["stock_available"] == 0 and stock["stock_reserved"] == 0

    say(
        f"phase 2: {opts.buyers} buyers over {opts.seconds:g} s ({opts.declined_share:.0%} declined, "
        f"{opts.three_ds_share:.0%} 3-D Secure never completed, hold {opts.hold_s:g} s), then late buyers with "
        f"good cards at {opts.late_rate:g}/s for {late_s:g} s at least, until nothing is left "
        f"({LATE_MAX_S:g} s at most)"
    )
    phase = await run_buyers(
        "declines and 3-D Secure",
        stack,
        infra,
        product,
        buyers + late,
        meter,
        news,
        opts,
        enough=nothing_left,
        open_until=opts.seconds + late_s,
    )
    late = [b for b in late if b.tapped is not None]
    out = phase.summary()
    out["late_buyers"] = len(late)
    out["late_paid"] = sum(1 for b in late if b.outcome == PAID)
    mine = {b.order_id for b in phase.buyers if b.order_id is not None}
    at_end = await wait_catalog(stack, product.product_id, out["paid"])
    # Units back on sale while the buyers were there (a snapshot: later releases are the last holds expiring).
    returned_by = Counter(t for o, t in news.returned.items() if o in mine)
    out["catalog_at_end"] = at_end
    out["paid_plus_held"] = out["paid"] + at_end["stock_reserved"]
    out["paid_plus_held_is_stock"] = out["paid_plus_held"] == opts.stock
    # Wait for the holds of the last 3-D Secure buyers to pass and the reconciler to release them.
    await asyncio.sleep(opts.hold_s + 3 * opts.reconcile_s + 2.0)
    after = await catalog_stock(stack, product.product_id)
    out["catalog_after_hold"] = after
    out["paid_plus_held_after_hold"] = out["paid"] + after["stock_reserved"]
    out["units_returned_by_declines"] = returned_by["OrderPaymentFailed"]
    out["units_returned_by_expired_holds"] = returned_by["OrderCancelled"]
    returned = sum(returned_by.values())
    out["units_returned_after_the_buyers"] = sum(1 for o in news.returned if o in mine) - returned
    # Reservations = paid + held + returned; every unit was reserved once at least (demand exceeds the stock), so
    # the rest are units taken again after coming back (by late buyers with good cards, mostly then paid).
    out["units_sold_again"] = min(returned, max(0, out["paid"] + at_end["stock_reserved"] + returned - opts.stock))
    out["oversold"] = max(0, after["stock_sold"] - opts.stock)
    out["conserved"] = after["stock_available"] + after["stock_reserved"] + after["stock_sold"] == opts.stock
    say(describe(out))
    say(
        f"units back on sale: {out['units_returned_by_declines']} from declines, "
        f"{out['units_returned_by_expired_holds']} from expired 3-D Secure holds; "
        f"sold again {out['units_sold_again']}; "
        f"paid + held at the end {out['paid_plus_held']} of {opts.stock}; catalog after the hold {after}"
    )
    return out


def summary_rows(result: dict[str, Any]) -> list[SummaryRow]:
    """The drop's rows in the summary table."""
    rows: list[SummaryRow] = []
    drop = result.get("drop")
    if not drop:
        return rows
    stock = int(drop["stock"])
    cpu = drop.get("cpu_per_order") or {}

    def row(metric: str, value: Any, unit: str = "", goal: str = "", met: bool | None = None, note: str = "") -> None:
        rows.append(SummaryRow("drop", metric, value, unit, goal=goal, met=met, note=note))

    row(
        "paid",
        drop["paid"],
        goal=f"= {stock} (the stock)",
        met=drop["paid"] == stock,
        note=f"{drop['buyers']:,} buyers",
    )
    row("oversold (catalog's sold − stock)", drop["oversold"], goal="0", met=drop["oversold"] == 0)
    row("server errors (5xx)", drop["server_errors_5xx"], goal="0", met=drop["server_errors_5xx"] == 0)
    row("buyers without a definitive answer", drop["no_answer"], goal="0", met=drop["no_answer"] == 0)
    row("sold out at the POST / later", f"{drop['sold_out_at_post']:,} / {drop['sold_out_later']:,}")
    row("tap → paid, p50 / p99", f"{_ms(drop['to_answer_paid']['p50_ms'])} / {_ms(drop['to_answer_paid']['p99_ms'])}")
    if drop.get("paid_to_accepted"):
        accepted, then = drop["paid_to_accepted"], drop["paid_accepted_to_answer"]
        row(
            "paid: tap → 202, then 202 → paid, p50 / p99",
            f"{_ms(accepted['p50_ms'])} / {_ms(accepted['p99_ms'])}, "
            f"then {_ms(then['p50_ms'])} / {_ms(then['p99_ms'])}",
            note="the POST's part and the paid-order pipeline's",
        )
    row(
        "tap → sold out, p50 / p99",
        f"{_ms(drop['to_answer_sold_out']['p50_ms'])} / {_ms(drop['to_answer_sold_out']['p99_ms'])}",
    )
    row("order page p99", drop["order_page"]["p99_ms"], "ms")
    row("timeline p99 (background reader)", drop["timeline"]["p99_ms"], "ms")
    accepted = cpu.get("accepted_ms") or {}
    refused = cpu.get("refused_at_post_ms") or {}
    row(
        "CPU per order the POST accepted, above idle",
        accepted.get("system"),
        "ms",
        note=f"services {accepted.get('services')} ms; with Postgres, broker, stand-in",
    )
    row(
        "CPU per order refused at the POST, above idle",
        refused.get("system"),
        "ms",
        note=f"services {refused.get('services')} ms; with Postgres, broker, stand-in",
    )
    if drop.get("steal_share") is not None:
        row("steal during the drop", f"{drop['steal_share']:.0%}")
    second = result.get("declines_and_3ds")
    if second:
        row(
            "with declines and 3-D Secure: paid + held at the end",
            second["paid_plus_held"],
            goal=f"= {stock}",
            met=bool(second["paid_plus_held_is_stock"]),
        )
        row(
            "with declines and 3-D Secure: declined / asked for 3-D Secure / paid",
            f"{second['declined']} / {second['needs_3ds']} / {second['paid']}",
            note=f"{second['buyers']:,} buyers, {second['late_buyers']} of them late",
        )
        row(
            "with declines and 3-D Secure: paid + held after the hold passed",
            second["paid_plus_held_after_hold"],
            note=f"catalog then: {second['catalog_after_hold']}",
        )
        row(
            "with declines and 3-D Secure: units back on sale / sold again",
            f"{second['units_returned_by_declines'] + second['units_returned_by_expired_holds']} / "
            f"{second['units_sold_again']}",
        )
        row("with declines and 3-D Secure: oversold", second["oversold"], goal="0", met=second["oversold"] == 0)
        row(
            "with declines and 3-D Secure: 5xx",
            second["server_errors_5xx"],
            goal="0",
            met=second["server_errors_5xx"] == 0,
        )
    return rows


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f} ms"


def run(opts: Options, infra: BenchInfra | None = None) -> dict[str, Any]:
    """Run the drop benchmark (starting its own infrastructure unless given) and write its results."""
    collect_like_the_services()
    own_infra = infra is None
    if infra is None:
        infra = BenchInfra(localstripe=False, standin=True)
    result: dict[str, Any] = {
        "benchmark": "drop",
        "machine": machine_info(),
        "config": {
            "buyers": opts.buyers,
            "seconds": opts.seconds,
            "stock": opts.stock,
            "second_phase": opts.second_phase,
            "declined_share": opts.declined_share,
            "three_ds_share": opts.three_ds_share,
            "hold_s": opts.hold_s,
            "reconcile_interval_s": opts.reconcile_s,
            "late_rate": opts.late_rate,
            "poll_s": opts.poll_s,
            "timeline_rate": opts.timeline_rate,
            "tiny": opts.tiny,
            "checkout_replicas": opts.checkout_replicas,
            "stand_in": "payment stand-in (bench/common/stripe_standin.py): fixed latency, not Stripe",
        },
    }
    ticks_at_start = machine_ticks()
    stack: ServiceStack | None = None
    try:
        if own_infra:
            say(f"starting broker, Postgres (durable), the payment stand-in in {infra.run_dir}")
            infra.start()
        stack = ServiceStack(
            infra,
            label="drop",
            stripe_url=infra.standin_url,
            stripe_kind="standin",
            replicas={"checkout": opts.checkout_replicas},
            extra_env={
                # The 3-D Secure hold, shortened so the benchmark sees held units come back.
                "TWEETSHOP_PAYMENT_ACTION_DEADLINE_S": f"{opts.hold_s:g}",
                "TWEETSHOP_RECONCILE_INTERVAL_S": f"{opts.reconcile_s:g}",
                # A held order is looked at again only when its recheck is due (30 s by default), the reconciler
                # included: without this the hold would last the recheck interval, not the deadline.
                "TWEETSHOP_PAYMENT_RECHECK_INTERVAL_S": f"{opts.reconcile_s:g}",
            },
        )
        say("starting the four services")
        stack.start()
        result.update(loop.run(drive(stack, infra, opts)))
    finally:
        if stack is not None:
            stack.stop()
        result["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        result["machine"]["steal_share"] = steal_share(ticks_at_start, machine_ticks())
        if own_infra:
            infra.stop()
    result["summary_rows"] = [r.as_dict() for r in summary_rows(result)]
    path = write_json(opts.name, result, opts.results_dir)
    print(markdown_table(result["summary_rows"]), flush=True)
    say(f"results in {path}")
    return result


def parse_args(argv: Sequence[str] | None) -> Options:
    """Command line → Options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buyers", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=5.0, help="the buyers arrive evenly over this many seconds")
    parser.add_argument("--stock", type=int, default=300)
    parser.add_argument(
        "--tiny", action="store_true", help="60 buyers, stock 10, 20 %% declined and 20 %% 3-D Secure, 4 s hold"
    )
    parser.add_argument("--no-second-phase", action="store_true", help="skip declines and 3-D Secure")
    parser.add_argument("--hold-seconds", type=float, default=10.0, help="checkout's 3-D Secure hold, shortened")
    parser.add_argument(
        "--poll-ms",
        type=float,
        default=0.0,
        help="how often every waiting buyer reloads its order page (0: only 3-D Secure buyers, every second)",
    )
    parser.add_argument("--timeline-rate", type=float, default=5.0, help="timeline reads/s during the drop")
    parser.add_argument(
        "--checkout-replicas",
        type=int,
        default=1,
        help="checkout processes (as compose's --scale); the buyers are spread over them as a load balancer would (1)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    opts = Options(
        buyers=args.buyers,
        seconds=args.seconds,
        stock=args.stock,
        second_phase=not args.no_second_phase,
        hold_s=args.hold_seconds,
        poll_s=args.poll_ms / 1000.0,
        timeline_rate=args.timeline_rate,
        tiny=args.tiny,
        checkout_replicas=args.checkout_replicas,
        results_dir=args.results_dir,
    )
    if args.tiny:
        opts.buyers, opts.stock, opts.hold_s, opts.reconcile_s, opts.late_rate = 60, 10, 4.0, 0.5, 5.0
        # Denser than 10 % / 5 %, so a few declined and 3-D Secure cards are among the first buyers, who get units.
        opts.declined_share, opts.three_ds_share = 0.2, 0.2
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.drop`."""
    opts = parse_args(argv)
    stop_on_signals()
    with contextlib.suppress(KeyboardInterrupt):
        result = run(opts)
        drop = result.get("drop") or {}
        return 0 if drop.get("paid_is_stock") and drop.get("oversold") == 0 else 1
    return 130


if __name__ == "__main__":
    sys.exit(main())
