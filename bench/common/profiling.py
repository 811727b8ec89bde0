"""Sampling profiles of running services with py-spy, and a short account of where their time goes.

``py-spy record --pid`` attaches from outside (no restart, no code change) and
writes collapsed stacks (``frame;frame;... count``). The summary sorts samples by
the package their innermost frame is in, and lists the hottest functions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PY_SPY_PIN = "py-spy==0.4.3"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def py_spy_binary() -> str | None:
    """The py-spy executable next to this Python, or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def record(pids: Mapping[str, int | None], out_dir: Path, *, seconds: float = 10.0, rate: int = 100) -> dict[str, Any]:
    """Profile every pid at once for ``seconds``; collapsed stacks to ``<out_dir>/profile-<name>.txt``."""
    binary = py_spy_binary()
    if binary is None:
        return {"skipped": f"py-spy is not installed (pip install {PY_SPY_PIN})"}
    out_dir.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, pid in pids.items():
        if pid is None:
            continue
        path = out_dir / f"profile-{name}.txt"
        argv = [binary, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate)]
        # --nonblocking: never pause the service to read its stacks, so the profile barely slows it.
        argv += ["--nonblocking", "--format", "raw", "--output", str(path)]
        running[name] = (subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), path)
    results: dict[str, Any] = {}
    for name, (process, path) in running.items():
        try:
            output, _ = process.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        if process.returncode != 0 or not path.exists():
            results[name] = {"error": output.decode(errors="replace")[-500:]}
            continue
        results[name] = {"file": str(path), **summarise(path.read_text())}
    return results


def _package(file: str) -> str:
    """Which package a frame's file belongs to (site-packages name, our own package, or the stdlib module)."""
    parts = Path(file).parts
    if parts and not file.startswith("/"):
        # py-spy shortens paths to what follows sys.path: "aiokafka/conn.py", "checkout/service.py", "selectors.py".
        return parts[0].removesuffix(".py")
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0].removesuffix(".py") if rest else file
    for marker in ("src", "bench"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :] if marker == "src" else parts[parts.index(marker) :]
            return rest[0].removesuffix(".py") if rest else file
    if "<frozen" in file or "python3" in file or "/lib/python" in file:
        return f"stdlib:{Path(file).stem}"
    return Path(file).stem


# What a sample is doing, judged by the first of these found anywhere in its stack (most specific first).
ACTIVITIES: tuple[tuple[str, str], ...] = (
    ("place_order (checkout/main.py", "HTTP POST /orders"),
    ("stripe_webhook (checkout/main.py", "HTTP Stripe webhook"),
    ("PaymentWorker", "payment worker (Stripe calls, claims, outcomes)"),
    ("OutboxRelay", "outbox relay"),
    ("_dead_letter", "subscribers: dead-lettering"),
    ("KafkaAckableMessage.ack", "subscribers: offset commit (one per batch)"),
    ("ReliableSubscriber.handle_batch", "subscribers: handler transaction (inbox + effects)"),
    ("ReliableSubscriber._consume", "subscribers: FastStream/decoding/logging around the handler"),
    ("faststream", "subscribers: FastStream dispatch"),
    ("Fetcher.", "aiokafka fetch loop"),
    ("GroupCoordinator", "aiokafka group coordination (heartbeats, commits)"),
    ("aiokafka", "aiokafka other"),
    ("h11_impl", "HTTP server plumbing (uvicorn, h11, starlette)"),
    ("httptools_impl", "HTTP server plumbing (uvicorn, h11, starlette)"),
    ("starlette", "HTTP server plumbing (uvicorn, h11, starlette)"),
    ("asyncpg", "asyncpg other (pool, protocol)"),
    ("EpollSelector.select", "event loop: waiting in select"),
    ("_run_once", "event loop: scheduling and other callbacks"),
)


# With uvloop the loop itself is C code: py-spy sees its epoll wait (idle) and its callback dispatch as the one
# Python frame above them, so a stack that ends there is counted on its own, not as work of anything.
UVLOOP_LEAF = "Runner.run (asyncio/runners.py"
IDLE_THREAD_LEAF = "Condition.wait (threading.py"


def _activity(stack: str) -> str:
    if stack.rstrip().rsplit(";", 1)[-1].startswith(UVLOOP_LEAF):
        return "event loop (uvloop, in C): waiting for I/O or dispatching callbacks"
    for needle, label in ACTIVITIES:
        if needle in stack:
            return label
    return "other"


def _parse_frame(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match.group("func"), match.group("file")


def summarise(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Samples by innermost package, hottest innermost functions, and our own functions by inclusive samples."""
    by_package: Counter[str] = Counter()
    by_activity: Counter[str] = Counter()
    leaf_functions: Counter[str] = Counter()
    inclusive_ours: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if stack.rstrip().rsplit(";", 1)[-1].startswith(IDLE_THREAD_LEAF):
            continue  # an idle worker thread (anyio's, the executor's): py-spy cannot tell this wait from work
        total += count
        by_activity[_activity(stack)] += count
        frames = [f for f in stack.split(";") if f]
        # py-spy puts the process and thread first; the innermost frame is last.
        code_frames = [_parse_frame(f) for f in frames if "(" in f]
        if not code_frames:
            continue
        func, file = code_frames[-1]
        package = _package(file) if file else "?"
        by_package[package] += count
        leaf_functions[f"{package}: {func}"] += count
        seen: set[str] = set()
        for f_func, f_file in code_frames:
            pkg = _package(f_file) if f_file else "?"
            if pkg in ("catalog", "feed", "checkout", "tracking", "tweetshop_platform", "tweetshop_contracts"):
                key = f"{pkg}: {f_func}"
                if key not in seen:
                    seen.add(key)
                    inclusive_ours[key] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"name": k, "samples": v, "share": round(v / total, 3)} for k, v in counter.most_common(top)]

    return {
        "samples": total,
        "by_activity": share(by_activity),
        "by_package": share(by_package),
        "hottest_functions": share(leaf_functions),
        "our_code_inclusive": share(inclusive_ours),
    }


def render_text(profiles: Mapping[str, Any]) -> str:
    """A readable account of every profile."""
    lines: list[str] = []
    for name, profile in profiles.items():
        if not isinstance(profile, dict) or "samples" not in profile:
            lines.append(f"## {name}: {profile}")
            continue
        lines.append(
            f"## {name}: {profile['samples']} samples (stacks py-spy saw active; uvloop's wait in C counts as active)"
        )
        for title, key in (
            ("what the process is doing", "by_activity"),
            ("innermost frame by package", "by_package"),
            ("hottest innermost functions", "hottest_functions"),
            ("our code, inclusive", "our_code_inclusive"),
        ):
            lines.append(f"### {title}")
            lines += [f"  {row['share'] * 100:5.1f}%  {row['name']}" for row in profile[key]]
        lines.append("")
    return "\n".join(lines)
