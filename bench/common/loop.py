"""The benchmarks' own event loop: uvloop, as the services run on (uvicorn picks it when installed).

The load generators share the two cores with what they measure: every millisecond one spends is one the shop
does not get. uvloop is in the lock file (a uvicorn extra).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
