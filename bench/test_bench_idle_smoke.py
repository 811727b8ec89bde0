"""The at-rest benchmark still works: a short window over the four services counts each one's CPU, and single
purchases after a rest are paid.

Benchmarks are not tests: this checks that every part was measured, never how much it used.
"""

from __future__ import annotations

from pathlib import Path

from bench.common.stack import BenchInfra
from bench.idle.run import run


def test_the_at_rest_benchmark_measures_each_service(infra: BenchInfra, tmp_path: Path) -> None:
    result = run(
        seconds=2.0, quiet_s=1.0, partitions=1, results_dir=tmp_path, tiny=True, purchases=2, gap_s=1.0, infra=infra
    )

    assert set(result["cores"]) >= {"catalog", "feed", "checkout", "tracking"}
    # The right pids: each service has used CPU since it started (imports, migrations: seconds), where a wrong pid
    # would show next to nothing. Its CPU in a 2 s window may round to 0 (a quiet service fetches once a second).
    started = result["cpu_s_before_window"]
    assert all(started[name] > 0.5 for name in ("catalog", "feed", "checkout", "tracking")), started
    assert result["services_cores"] > 0
    assert (tmp_path / "idle-tiny.json").exists()
    assert result["summary_rows"][0]["benchmark"] == "idle"
    at_rest = result["purchases_at_rest"]
    assert at_rest["errors"] == [] and at_rest["to_order_paid"]["count"] == 2, at_rest
