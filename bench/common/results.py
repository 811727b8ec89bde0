"""Results on disk: one JSON file per benchmark, and a markdown table that sums them all up.

A benchmark's JSON may carry ``summary_rows``: a list of rows (see ``SummaryRow``)
that ``bench.run_all`` puts in ``bench/results/summary.md``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"
HISTORY_DIR = RESULTS_DIR / "history"


@dataclass(frozen=True)
class SummaryRow:
    """One line of the summary table: a measured value, its baseline and the goal it is held to."""

    benchmark: str
    metric: str
    value: float | int | str | None
    unit: str = ""
    baseline: float | int | None = None
    baseline_label: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """value ÷ baseline when both are numbers."""
        if not isinstance(self.value, int | float) or not isinstance(self.baseline, int | float) or not self.baseline:
            return None
        if math.isnan(float(self.value)) or math.isnan(float(self.baseline)):
            return None
        return round(float(self.value) / float(self.baseline), 3)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly, with the ratio."""
        return {**asdict(self), "ratio": self.ratio}


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, including how loaded the machine was."""
    load = os.getloadavg()
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a devstack dependency
        pass
    return info


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(name: str, data: Mapping[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    """Write ``<results_dir>/<name>.json`` (nan and inf become null); a full-size run written to the
    repository's results also goes into its history (``write_history``)."""
    path = write_json_file(results_dir / f"{name}.json", data)
    if results_dir.resolve() == RESULTS_DIR.resolve() and not name.endswith("-tiny"):
        write_history(name, data)
    return path


def current_commit(repo: Path = RESULTS_DIR.parent.parent) -> tuple[str, bool]:
    """The short commit the benchmark ran on, and whether the work tree had changes beside it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return commit, bool(changes)


def write_history(name: str, data: Mapping[str, Any], history_dir: Path = HISTORY_DIR) -> Path:
    """Keep this run in ``bench/results/history/<date>-<commit>.json`` (committed with the code), under its
    benchmark's name beside the other benchmarks run on that commit that day, so progress can be read from
    the repository. A later run of the same benchmark on the same commit and day replaces the earlier one."""
    commit, dirty = current_commit()
    path = history_dir / f"{time.strftime('%Y-%m-%d')}-{commit}.json"
    runs: dict[str, Any] = {}
    if path.exists():
        try:
            runs = json.loads(path.read_text()).get("runs", {})
        except (json.JSONDecodeError, AttributeError):
            runs = {}
    runs[name] = dict(data)
    return write_json_file(path, {"commit": commit, "work_tree_changed": dirty, "runs": runs})


def write_json_file(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as JSON to ``path``, making its directory (nan and inf become null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(dict(data)), indent=2, sort_keys=False) + "\n")
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """The summary rows of every benchmark as one markdown table."""
    lines = [
        "| benchmark | metric | ours | baseline | ours ÷ baseline | goal | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        unit = f" {row['unit']}" if row.get("unit") else ""
        baseline = row.get("baseline")
        base = f"{_fmt(baseline)}{unit}" if baseline is not None else "–"
        if row.get("baseline_label"):
            base += f" ({row['baseline_label']})"
        value = f"{_fmt(row.get('value'))}{unit}" if row.get("value") is not None else "–"
        if row.get("note"):
            value += f" ({row['note']})"
        met = row.get("met")
        lines.append(
            f"| {row.get('benchmark', '')} | {row.get('metric', '')} | {value} | {base} | "
            f"{_fmt(row.get('ratio'))} | {row.get('goal') or '–'} | {'–' if met is None else _fmt(bool(met))} |"
        )
    return "\n".join(lines)
