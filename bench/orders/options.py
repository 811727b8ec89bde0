"""What one run of the orders benchmark does, and how big."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.results import RESULTS_DIR

DEFAULT_LADDER = (5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 400, 600, 800, 1000, 1200, 1500)


@dataclass
class Options:
    """What to run, and how big."""

    tiny: bool = False
    modes: tuple[str, ...] = ("b", "a")
    ladder: tuple[float, ...] = DEFAULT_LADDER
    step_s: float = 10.0
    settle_s: float = 60.0
    latency_ms: float = 100.0
    rate_429: float = 0.1
    baseline: bool = True
    raw: bool = True
    profile_s: float = 10.0
    durable_postgres: bool = True
    results_dir: Path = RESULTS_DIR
    inflight_probe: bool = True
    inflight_orders: int = 100
    inflight_rate: float = 50.0
    tiny_orders: int = 20
    tiny_rate: float = 5.0
    returning_buyers: int = 20  # the returning-buyer phase (stand-in only): buyers who buy twice, 0: skip
    tiny_returning_buyers: int = 5
    tiny_rate_429: float = 0.0  # share of the stand-in's answers that are 429s during the tiny step
    extra: dict[str, Any] = field(default_factory=dict)
