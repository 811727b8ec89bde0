"""Location ingest benchmark: how many courier points per second tracking persists and publishes, and how fast a
live watcher sees them, against a hand-written asyncpg + aiokafka pipeline on the same broker and database.

``python -m bench.locations`` (from the repository root) starts Postgres and Tansu as embedded children (or uses
``--postgres-dsn`` / ``--kafka``), runs tracking as its own process (then as 2 replicas behind the generator's
round robin, ``--tracking-replicas``), and for 1 and for 1,000 live watchers:

* **tracking**: an open-loop generator posts batches of points to ``POST /shipments/{id}/locations`` at
  increasing rates; real SSE connections to ``GET /shipments/{id}/stream`` stamp when each point shows up.
  Persisted+published points/s comes from the outbox (rows published by the relay after the broker's ack).
* **baseline** (bench/locations/baseline.py, its own process): the same batches at the same rates, inserted,
  produced, consumed and handed to asyncio queues with nothing in between.

Latency is from each batch's *scheduled* send time to the watcher, so a backed-up system cannot hide.
It prints a markdown table (each result with its ratio to the baseline) and writes JSON to
``bench/results/locations.json``. ``--tiny`` runs a few hundred points with 10 watchers (the smoke test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
from aiokafka import AIOKafkaProducer
from tweetshop_contracts import Destination
from tweetshop_devstack.infra import LOCALHOST, ManagedProcess, free_port
from tweetshop_devstack.services import TRACKING, dev_password, service_dsn, service_env
from tweetshop_devstack.testing import create_database, drop_database, dsn_with_database, metric_value, order_paid
from tweetshop_platform.db import provision_service

from bench.common.gc_settings import collect_like_the_services
from bench.common.results import SummaryRow, machine_info, write_json_file
from bench.common.stack import BenchInfra, stop_on_signals
from bench.locations.load import (
    Clock,
    CpuMeter,
    Deliveries,
    latency_summary,
    micros_of,
    open_loop,
    point_json,
    saturated,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "bench" / "results" / "locations.json"
OPERATOR_KEY = "bench-operator-key"
PARTITIONS = 6
# tracking's default live_fetch_max_wait_ms; the baseline's consumer waits the same.
LIVE_FETCH_MAX_WAIT_MS = 50
# The watched courier's points: ~5.5 km north of the destination, so every shipment stays in transit.
DEST = Destination(city="Paris", country="FR", lat=48.8530, lon=2.3499)
COURIER_LAT, COURIER_LON = 48.9030, 2.3499


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    rates: list[int]  # offered points/s, ascending
    step_s: float
    batch: int
    watcher_cases: list[int]
    replica_cases: list[int]  # tracking processes, ascending: 1 is the headline, more is scaling out
    min_shipments: int  # shipments the load is spread over when there are fewer watchers
    max_in_flight: int
    drain_timeout_s: float
    tiny: bool

    def shipments_for(self, watchers: int) -> int:
        return max(watchers, self.min_shipments)


_STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"bench {time.monotonic() - _STARTED:6.1f}s | {message}", file=sys.stderr, flush=True)


def start_tracking(
    database_dsn: str, bootstrap: str, namespace: str, logs: Path, name: str = "tracking"
) -> tuple[ManagedProcess, str]:
    """tracking as its own process, configured as `make run` does; returns it and its base URL."""
    port = free_port()
    env = service_env(
        TRACKING,
        http_port=port,
        database_url=service_dsn(database_dsn, "tracking", dev_password("tracking")),
        kafka_bootstrap=bootstrap,
        topic_namespace=namespace,
        log_format="json",
        high_rate_limits=True,  # one address sends what many buyers and couriers would
    )
    env |= {"TWEETSHOP_OPERATOR_KEY": OPERATOR_KEY, "TWEETSHOP_KAFKA_TOPIC_PARTITIONS": str(PARTITIONS)}
    process = ManagedProcess(
        name,
        [sys.executable, "-m", "tracking"],
        log_path=logs / f"{name}.log",
        env={
            **os.environ,
            **env,
        },
    )
    process.start()
    base_url = f"http://{LOCALHOST}:{port}"

    def live_feed_reading() -> bool:
        try:
            text = httpx.get(f"{base_url}/metrics", timeout=2).text
        except httpx.HTTPError:
            return False
        return any(
            line.startswith("tweetshop_tracking_live_partitions_assigned ") and float(line.split()[-1]) > 0
            for line in text.splitlines()
        )

    process.wait_until_ready(live_feed_reading, timeout=90, what="live feed reading (partitions assigned)")
    return process, base_url


# --- tracking under load -----------------------------------------------------------------------------------------


@dataclass
class Courier:
    shipment_id: str
    token: str


async def create_shipments(base_url: str, bootstrap: str, namespace: str, count: int) -> list[Courier]:
    """``count`` paid orders on checkout's topic → tracking's shipments, each with a courier token."""
    orders = {uuid.uuid4() for _ in range(count)}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = []
        for order_id in orders:
            event = order_paid(
                order_id,
                destination=DEST,
                amount_minor=1000,
                producer="bench",
                correlation_id=f"bench-{order_id}",
                payment_intent_id=f"pi_{order_id.hex[:16]}",
            )
            futures.append(await producer.send(namespace + event.topic(), event.to_bytes(), key=event.key().encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    found: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=operator) as api:
        deadline = time.monotonic() + 120
        while len(found) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"tracking created {len(found)} of {count} shipments in time")
            cursor: dict[str, str] = {}
            while True:
                page = (await api.get("/shipments", params={"status": "label_created", "limit": 500, **cursor})).json()
                for s in page:
                    if uuid.UUID(s["order_id"]) in orders:
                        found[s["order_id"]] = s["id"]
                if len(page) < 500:
                    break
                # Shipments created in one transaction share created_at: the id continues the page after a tie.
                cursor = {"created_after": page[-1]["created_at"], "after_id": page[-1]["id"]}
            await asyncio.sleep(0.2)

        gate = asyncio.Semaphore(16)

        async def token_for(shipment_id: str) -> Courier:
            async with gate:
                issued = await api.post(f"/shipments/{shipment_id}/courier-token")
                issued.raise_for_status()
                return Courier(shipment_id, issued.json()["courier_token"])

        return list(await asyncio.gather(*(token_for(s) for s in found.values())))


class SseWatcher:
    """One live map page, reduced to its stream: raw HTTP/1.1, stamping when each shipment update arrives."""

    def __init__(self, base_url: str, shipment_id: str, deliveries: Deliveries) -> None:
        host_port = base_url.removeprefix("http://")
        self.host, port = host_port.split(":")
        self.port = int(port)
        self.shipment_id = shipment_id
        self.deliveries = deliveries
        self.opened = asyncio.Event()
        self.updates = 0

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        try:
            writer.write(
                f"GET /shipments/{self.shipment_id}/stream HTTP/1.1\r\nHost: {self.host}\r\n"
                f"Authorization: Bearer {OPERATOR_KEY}\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(f"stream of {self.shipment_id}: {status!r}")
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            buffer, event = b"", b""
            key = b'"recorded_at":"'
            while True:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    return
                now = time.monotonic()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                # Chunked transfer framing lines ("1f4\r") fall between events and match nothing below.
                for line in lines:
                    if line.startswith(b"event: "):
                        event = line[7:].strip()
                    elif line.startswith(b"data: "):
                        if event == b"snapshot":
                            self.opened.set()
                        elif event in (b"location", b"status"):
                            # The first recorded_at of the shipment's JSON is its last location's.
                            at = line.find(key)
                            if at >= 0:
                                end = line.index(b'"', at + len(key))
                                stamp = line[at + len(key) : end].decode()
                                self.deliveries.seen(self.shipment_id, micros_of(stamp), now)
                                self.updates += 1
        finally:
            writer.close()


async def metric(api: aiohttp.ClientSession, base_url: str, name: str) -> float:
    async with api.get(f"{base_url}/metrics") as response:
        return metric_value(await response.text(), name)


async def run_tracking(
    plan: Plan,
    base_urls: list[str],
    couriers: list[Courier],
    watchers: int,
    database_dsn: str,
    meter: CpuMeter,
    clock: Clock,
) -> list[dict[str, Any]]:
    """Every rate of the plan through tracking, with ``watchers`` live streams open.

    With several replicas, as behind a load balancer: courier i posts to replica i mod n, and watcher i
    streams from replica i mod n (each replica's live feed reads the whole topic in its own group).
    """
    deliveries = Deliveries()

    def replica_of(index: int) -> str:
        return base_urls[index % len(base_urls)]

    async def dropped_total() -> float:
        return sum([await metric(api, url, "tweetshop_tracking_live_updates_dropped_total") for url in base_urls])

    streams = [SseWatcher(replica_of(i), c.shipment_id, deliveries) for i, c in enumerate(couriers[:watchers])]
    for stream in streams:
        deliveries.watch(stream.shipment_id)
    stream_tasks = [asyncio.create_task(s.run()) for s in streams]
    results: list[dict[str, Any]] = []
    db = await asyncpg.connect(database_dsn)
    # aiohttp, not httpx: the generator shares the cores with tracking, and once requests queue up httpx's pool
    # cost it most of a core (measured: 0.72 cores at 5,000 points/s offered).
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as api:
        try:
            await asyncio.wait_for(asyncio.gather(*(s.opened.wait() for s in streams)), 60)
            say(f"tracking ×{len(base_urls)}: {watchers} live streams open")
            statuses: dict[int, int] = {}
            post_seconds: list[float] = []
            for rate in plan.rates:
                deliveries.reset()
                statuses.clear()
                post_seconds.clear()
                accepted = 0
                first_micros = clock.next_us()
                dropped_before = await dropped_total()
                step_started_db = await db.fetchval("SELECT clock_timestamp()")
                meter.start()

                async def send(index: int, scheduled: float) -> None:
                    nonlocal accepted
                    courier_index = index % len(couriers)
                    courier = couriers[courier_index]
                    points = []
                    for _ in range(plan.batch):
                        micros = clock.next_us()
                        deliveries.expect(courier.shipment_id, micros, scheduled)
                        points.append(point_json(COURIER_LAT, COURIER_LON, micros))
                    try:
                        posted_at = time.monotonic()
                        async with api.post(
                            f"{replica_of(courier_index)}/shipments/{courier.shipment_id}/locations",
                            data=json.dumps(points),
                            headers={"Authorization": f"Bearer {courier.token}", "Content-Type": "application/json"},
                        ) as response:
                            body = await response.read()
                        post_seconds.append(time.monotonic() - posted_at)
                        statuses[response.status] = statuses.get(response.status, 0) + 1
                        if response.status == 200:
                            accepted += json.loads(body)["accepted"]
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        statuses[-1] = statuses.get(-1, 0) + 1
                        say(f"POST failed: {exc!r}")

                batches = max(1, round(rate * plan.step_s / plan.batch))
                lateness = await open_loop(batches, plan.batch / rate, send, max_in_flight=plan.max_in_flight)
                deadline = time.monotonic() + plan.drain_timeout_s
                backlog = 1
                while time.monotonic() < deadline:
                    backlog = await db.fetchval("SELECT count(*) FROM tracking.outbox WHERE published_at IS NULL")
                    if backlog == 0 and deliveries.outstanding == 0:
                        break
                    await asyncio.sleep(0.05)
                cores = meter.stop()
                row = await db.fetchrow(
                    """SELECT coalesce(sum(1 + coalesce(cardinality(more_event_ids), 0)), 0) AS n,
                              max(published_at) AS last
                       FROM tracking.outbox
                       WHERE event_type = 'ShipmentLocationUpdated' AND created_at >= $1
                         AND published_at IS NOT NULL""",
                    step_started_db,
                )
                assert row is not None
                persisted = await db.fetchval(
                    """SELECT count(*) FROM tracking.shipment_locations
                       WHERE recorded_at > to_timestamp($1 / 1e6) AND recorded_at <= to_timestamp($2 / 1e6)""",
                    first_micros,
                    clock.next_us(),
                )
                published = int(row["n"])
                elapsed = (row["last"] - step_started_db).total_seconds() if row["last"] else float("inf")
                dropped = await dropped_total() - dropped_before
                result = {
                    "pipeline": "tracking",
                    "replicas": len(base_urls),
                    "watchers": watchers,
                    "shipments": len(couriers),
                    "offered_pps": rate,
                    "sent": batches * plan.batch,
                    "accepted": accepted,
                    "persisted": int(persisted),
                    "published": published,
                    "unpublished_after_drain": int(backlog),
                    "expected_deliveries": deliveries.expected_count,
                    "delivered": len(deliveries.latencies),
                    "lost": deliveries.outstanding,
                    "live_updates_coalesced": int(dropped),
                    "http_status": {str(k): v for k, v in sorted(statuses.items())},
                    "throughput_pps": round(published / elapsed, 1) if elapsed > 0 else None,
                    "generator_lateness_ms": round(lateness * 1000, 1),
                    "latency": latency_summary(deliveries.latencies),
                    "post_response": latency_summary(post_seconds),
                    "cores": cores,
                    "steal_share": meter.steal_share,
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
                results.append(result)
                say(f"tracking×{len(base_urls)} {watchers:>5} watchers {rate:>6} pts/s → {brief(result)}")
                if saturated(result):
                    say("tracking saturated: higher rates skipped")
                    break
        finally:
            for task in stream_tasks:
                task.cancel()
            await asyncio.gather(*stream_tasks, return_exceptions=True)
            await db.close()
    return results


def run_baseline(
    plan: Plan, admin_dsn: str, bootstrap: str, namespace: str, watchers: int, pids: dict[str, int | None]
) -> list[dict[str, Any]]:
    """Every rate of the plan through the hand-written pipeline, in its own process (as tracking runs in its own)."""
    config = {
        "dsn": admin_dsn,
        "bootstrap": bootstrap,
        "topic": f"{namespace}baseline.locations.{watchers}",
        "partitions": PARTITIONS,
        "shipments": plan.shipments_for(watchers),
        "watchers": watchers,
        "rates": plan.rates,
        "step_s": plan.step_s,
        "batch": plan.batch,
        "max_in_flight": plan.max_in_flight,
        "drain_timeout_s": plan.drain_timeout_s,
        "pids": {k: v for k, v in pids.items() if v is not None},
        "fetch_max_wait_ms": LIVE_FETCH_MAX_WAIT_MS,
    }
    completed = subprocess.run(
        [sys.executable, "-m", "bench.locations.baseline", json.dumps(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"baseline failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    results = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    for result in results:
        say(f"baseline  {watchers:>5} watchers {result['offered_pps']:>6} pts/s → {brief(result)}")
    return results


def sustained(results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The highest step that kept up (≥ 95% of the offered rate), lost nothing and kept p99 under a second."""
    kept = [
        r
        for r in results
        if (r["throughput_pps"] or 0) >= 0.95 * r["offered_pps"]
        and r["lost"] == 0
        and r["latency"]["p99_ms"] is not None
        and r["latency"]["p99_ms"] < 1000
    ]
    return max(kept, key=lambda r: r["offered_pps"]) if kept else None


def brief(r: dict[str, Any]) -> str:
    lat = r["latency"]
    return (
        f"{r['throughput_pps']} pts/s persisted+published, p50/p95/p99 {lat['p50_ms']}/{lat['p95_ms']}/{lat['p99_ms']}"
        f" ms, delivered {r['delivered']}/{r['expected_deliveries']}, lost {r['lost']}, cores {r['cores']}"
        + (f", steal {r['steal_share']:.0%}" if r.get("steal_share") is not None else "")
    )


# --- report ------------------------------------------------------------------------------------------------------


def ratio(ours: float | None, base: float | None) -> str:
    if not ours or not base:
        return "–"
    return f"{ours / base:.2f}"


def pipeline_label(r: dict[str, Any]) -> str:
    replicas = r.get("replicas", 1)
    return f"tracking ×{replicas}" if r["pipeline"] == "tracking" and replicas > 1 else r["pipeline"]


def tracking_cases(results: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(replicas, watchers) of every tracking case, fewest replicas first."""
    return sorted({(r.get("replicas", 1), r["watchers"]) for r in results if r["pipeline"] == "tracking"})


def of_case(results: list[dict[str, Any]], replicas: int, watchers: int) -> list[dict[str, Any]]:
    return [
        r
        for r in results
        if r["pipeline"] == "tracking" and r.get("replicas", 1) == replicas and r["watchers"] == watchers
    ]


def markdown(results: list[dict[str, Any]]) -> str:
    """Each result beside its baseline (same watchers, same offered rate)."""
    baseline = {(r["watchers"], r["offered_pps"]): r for r in results if r["pipeline"] == "baseline"}
    lines = [
        "| watchers | offered pts/s | pipeline | persisted+published pts/s | p50 ms | p95 ms | p99 ms "
        "| delivered / expected | lost | throughput ÷ baseline | p99 ÷ baseline |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def order(r: dict[str, Any]) -> tuple[int, int, bool, int]:
        return (r["watchers"], r["offered_pps"], r["pipeline"] != "tracking", r.get("replicas", 1))

    for r in sorted(results, key=order):
        base = baseline.get((r["watchers"], r["offered_pps"])) if r["pipeline"] == "tracking" else None
        lat = r["latency"]
        lines.append(
            f"| {r['watchers']} | {r['offered_pps']} | {pipeline_label(r)} | {r['throughput_pps']} | {lat['p50_ms']} "
            f"| {lat['p95_ms']} | {lat['p99_ms']} | {r['delivered']} / {r['expected_deliveries']} | {r['lost']} "
            f"| {ratio(r['throughput_pps'], base['throughput_pps']) if base else ''} "
            f"| {ratio(lat['p99_ms'], base['latency']['p99_ms']) if base else ''} |"
        )
    lines += [
        "",
        "| watchers | tracking processes | sustained by tracking (pts/s) | sustained by baseline, 1 process (pts/s) "
        "| ratio |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for replicas, watchers in tracking_cases(results):
        ours = sustained(of_case(results, replicas, watchers))
        base_best = sustained([r for r in results if r["pipeline"] == "baseline" and r["watchers"] == watchers])
        ours_rate = ours["offered_pps"] if ours else None
        base_rate = base_best["offered_pps"] if base_best else None
        lines.append(
            f"| {watchers} | {replicas} | {ours_rate or '–'} | {base_rate or '–'} | {ratio(ours_rate, base_rate)} |"
        )
    return "\n".join(lines)


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the benchmarks' summary table (bench/results/summary.md): the goals of the benchmarks issue."""
    rows: list[dict[str, Any]] = []
    for replicas, watchers in tracking_cases(results):
        ours = sustained(of_case(results, replicas, watchers))
        base = sustained([r for r in results if r["pipeline"] == "baseline" and r["watchers"] == watchers])
        value = ours["offered_pps"] if ours else None
        baseline = base["offered_pps"] if base else None
        processes = f", {replicas} tracking processes (baseline: 1)" if replicas > 1 else ""
        rows.append(
            SummaryRow(
                "locations",
                f"points/s sustained, persisted + published + seen by {watchers} SSE watcher(s){processes}",
                value,
                "pts/s",
                baseline,
                "asyncpg + aiokafka by hand",
                "≥ 20,000 pts/s, ≥ 0.5 × baseline",
                bool(value and value >= 20_000 and baseline and value >= 0.5 * baseline),
            ).as_dict()
        )
        if ours:
            p99 = ours["latency"]["p99_ms"]
            # The baseline at the same offered rate, not at its own sustained one.
            same_rate = [
                r
                for r in results
                if r["pipeline"] == "baseline" and r["watchers"] == watchers and r["offered_pps"] == value
            ]
            base_p99 = same_rate[0]["latency"]["p99_ms"] if same_rate else None
            rows.append(
                SummaryRow(
                    "locations",
                    f"p99 POST → SSE watcher at {value} pts/s, {watchers} watcher(s){processes}",
                    p99,
                    "ms",
                    base_p99,
                    "to an asyncio queue, same rate",
                    "< 500 ms with 1,000 watchers" if watchers >= 1000 else "",
                    (p99 is not None and p99 < 500) if watchers >= 1000 else None,
                ).as_dict()
            )
    return rows


# --- main --------------------------------------------------------------------------------------------------------


def plan_from(args: argparse.Namespace) -> Plan:
    if args.tiny:
        return Plan(
            rates=[200],
            step_s=2.0,
            batch=10,
            watcher_cases=[10],
            replica_cases=[1, 2],
            min_shipments=10,
            max_in_flight=32,
            drain_timeout_s=20,
            tiny=True,
        )
    return Plan(
        rates=[int(r) for r in args.rates.split(",")],
        step_s=args.step_seconds,
        batch=args.batch,
        watcher_cases=[int(w) for w in args.watchers.split(",")],
        replica_cases=sorted({int(n) for n in args.tracking_replicas.split(",")}),
        min_shipments=20,
        max_in_flight=256,
        drain_timeout_s=30,
        tiny=False,
    )


async def run_all(
    plan: Plan, admin_dsn: str, bootstrap: str, pids: dict[str, int | None], logs: Path
) -> dict[str, Any]:
    started_at = datetime.now(UTC).isoformat()
    name = f"bench_{uuid.uuid4().hex[:12]}"
    namespace = f"b{uuid.uuid4().hex[:10]}."
    await create_database(admin_dsn, name)
    database_dsn = dsn_with_database(admin_dsn, name)
    replicas: list[ManagedProcess] = []
    results: list[dict[str, Any]] = []
    try:
        await provision_service(database_dsn, "tracking", dev_password("tracking"))
        started, base_url = await asyncio.to_thread(start_tracking, database_dsn, bootstrap, namespace, logs)
        replicas.append(started)
        base_urls = [base_url]
        say(f"tracking ready at {base_url} (pid {started.pid})")
        total = sum(plan.shipments_for(w) for w in plan.watcher_cases) * len(plan.replica_cases)
        couriers = await create_shipments(base_url, bootstrap, namespace, total)
        say(f"{len(couriers)} shipments with courier tokens")
        clock = Clock()
        offset = 0
        for replica_count in plan.replica_cases:
            while len(replicas) < replica_count:
                replica_name = f"tracking-{len(replicas) + 1}"
                started, base_url = await asyncio.to_thread(
                    start_tracking, database_dsn, bootstrap, namespace, logs, replica_name
                )
                replicas.append(started)
                base_urls.append(base_url)
                say(f"{replica_name} ready at {base_url} (pid {started.pid})")
            meter = CpuMeter(
                {"tracking" if i == 0 else f"tracking-{i + 1}": r.pid for i, r in enumerate(replicas)}
                | {"bench": os.getpid(), **pids}
            )
            for watchers in plan.watcher_cases:
                mine = couriers[offset : offset + plan.shipments_for(watchers)]
                offset += len(mine)
                results += await run_tracking(plan, base_urls, mine, watchers, database_dsn, meter, clock)
                if replica_count == plan.replica_cases[0]:  # the baseline is one process: measured once
                    results += await asyncio.to_thread(
                        run_baseline, plan, database_dsn, bootstrap, namespace, watchers, pids
                    )
    except BaseException:
        for replica in replicas:
            say(f"{replica.name}'s last log lines:\n{replica.tail(40)}")
        raise
    finally:
        for replica in replicas:
            replica.stop()
        await drop_database(admin_dsn, name)
    return {
        "benchmark": "locations",
        "started_at": started_at,
        # Other work on the machine moves every number: the load (at the end) says how much.
        "machine": machine_info(),
        "plan": plan.__dict__,
        "infrastructure": {
            "postgres": "given" if "postgres" not in pids else "embedded, make run's settings (durable commits)",
            "kafka": "given" if "broker" not in pids else "embedded Tansu (memory storage)",
        },
        "results": results,
        "summary_rows": summary_rows(results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a few hundred points, 10 watchers (the smoke test)")
    parser.add_argument(
        "--rates", default="1000,2000,3000,4000,5000,6000,7500,10000,15000,20000", help="offered points/s, ascending"
    )
    parser.add_argument("--step-seconds", type=float, default=8.0, help="how long each rate is offered")
    parser.add_argument("--batch", type=int, default=50, help="points per POST")
    parser.add_argument("--watchers", default="1,1000", help="live watcher counts to measure")
    parser.add_argument(
        "--tracking-replicas",
        default="1,2",
        help="tracking processes to measure, e.g. 1,2 (more than one: as behind a load balancer, scaling out)",
    )
    parser.add_argument("--postgres-dsn", help="a Postgres superuser DSN to use instead of an embedded server")
    parser.add_argument("--kafka", help="a Kafka bootstrap to use instead of an embedded Tansu")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where the JSON results go")
    args = parser.parse_args(argv)
    stop_on_signals()
    plan = plan_from(args)
    collect_like_the_services()  # the generator and its 1,000 watchers share the cores with what they measure

    # The same server settings `make run` uses (durable commits): honest numbers, not test-tuned ones.
    infra = BenchInfra(kafka_bootstrap=args.kafka, admin_dsn=args.postgres_dsn, localstripe=False, standin=False)
    try:
        infra.start()
        report = asyncio.run(run_all(plan, infra.admin_dsn, infra.kafka_bootstrap, infra.pids(), infra.logs_dir))
    finally:
        infra.stop()
    write_json_file(args.output, report)
    print(markdown(report["results"]))
    say(f"results written to {args.output}")
    return 0
