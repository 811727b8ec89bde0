"""Fixtures of the benchmarks' smoke tests (counts only, never timings)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.common.stack import BenchInfra


@pytest.fixture
def infra(kafka_bootstrap: str, postgres_admin_dsn: str, tmp_path: Path) -> Iterator[BenchInfra]:
    """The session's broker and Postgres, and a payment stand-in of our own."""
    parts = BenchInfra(
        run_dir=tmp_path / "bench",
        kafka_bootstrap=kafka_bootstrap,
        admin_dsn=postgres_admin_dsn,
        localstripe=False,
        standin=True,
    )
    parts.start()
    try:
        yield parts
    finally:
        parts.stop()
