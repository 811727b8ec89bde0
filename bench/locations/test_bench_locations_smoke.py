"""The location benchmark still works: a tiny run (400 points, 10 live watchers) loses nothing.

Benchmarks are not tests: this asserts counts only, never timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_tiny_location_benchmark_persists_publishes_and_delivers_every_point(
    kafka_bootstrap: str, postgres_admin_dsn: str, tmp_path: Path
) -> None:
    output = tmp_path / "locations.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.locations",
            "--tiny",
            "--postgres-dsn",
            postgres_admin_dsn,
            "--kafka",
            kafka_bootstrap,
            "--output",
            str(output),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = json.loads(output.read_text())["results"]

    by_case = {(r["pipeline"], r.get("replicas")): r for r in results}
    # One tracking process, then two behind the generator's round robin; the baseline once.
    assert set(by_case) == {("tracking", 1), ("tracking", 2), ("baseline", None)}
    for result in results:
        assert result["watchers"] == 10
        assert result["sent"] == 400
        assert result["persisted"] == result["published"] == 400, result
        assert result["delivered"] == result["expected_deliveries"] == 400, result
        assert result["lost"] == 0
    for replicas in (1, 2):
        tracking = by_case[("tracking", replicas)]
        assert tracking["accepted"] == 400
        assert tracking["http_status"] == {"200": 40}
        assert tracking["unpublished_after_drain"] == 0
        assert ("tracking-2" in tracking["cores"]) == (replicas == 2)
    # The table is printed for people: one line per result, each tracking line with its ratio to the baseline.
    out = completed.stdout
    assert out.count("| 10 | 200 | tracking |") == out.count("| 10 | 200 | tracking ×2 |") == 1
    assert out.count("| 10 | 200 | baseline |") == 1
