"""Crash points for chaos tests: die with ``os._exit`` at a named point, with a configured probability.

Off unless ``TWEETSHOP_FAULT_POINTS`` is set, e.g.
``TWEETSHOP_FAULT_POINTS="outbox_after_publish:0.05,checkout_after_stripe:0.1"``.
The process exits at once (no cleanup, no flush, no rollback), exactly as
``kill -9`` would leave it, but at a point chosen for being dangerous: after an
effect outside the database (a Kafka publish, a Stripe call) and before the
database records it. The points in use:

| point | where |
| --- | --- |
| ``outbox_after_publish`` | ``OutboxRelay.publish_pending``: the broker acked the batch, the rows are not marked yet |
| ``checkout_after_stripe`` | checkout's payment step: Stripe answered, the outcome is not committed yet |
| ``checkout_after_order_leased`` | checkout's POST: the order is placed leased to its payment worker, not handed over |

With ``TWEETSHOP_FAULT_ARM_FILE=<path>`` as well, the points fire only while that
file exists, so a test can start its services calmly, set up its data, and arm
the crash points when the chaos begins (and disarm them to let things settle).

This is the one module besides the settings that reads ``os.environ``: crash
points must exist below every service's settings (the outbox relay is shared).
"""

from __future__ import annotations

import functools
import os
import random
import sys

ENV_VAR = "TWEETSHOP_FAULT_POINTS"
ARM_FILE_VAR = "TWEETSHOP_FAULT_ARM_FILE"
# What a SIGKILL looks like to a supervisor (128 + 9).
EXIT_CODE = 137
MARKER = "tweetshop fault injection: crashing at"


def parse_points(spec: str) -> dict[str, float]:
    """``"a:0.1,b:0.5"`` → ``{"a": 0.1, "b": 0.5}``; ValueError on anything else."""
    points: dict[str, float] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, probability = item.partition(":")
        try:
            value = float(probability)
        except ValueError:
            value = -1.0
        if not sep or not name.strip() or not 0.0 <= value <= 1.0:
            raise ValueError(f"{ENV_VAR}: {item!r} is not <point>:<probability between 0 and 1>")
        points[name.strip()] = value
    return points


@functools.cache
def active_points() -> dict[str, float]:
    """The crash points configured for this process (empty: fault injection is off)."""
    return parse_points(os.environ.get(ENV_VAR, ""))


def _armed() -> bool:
    arm_file = os.environ.get(ARM_FILE_VAR, "")
    return not arm_file or os.path.exists(arm_file)


def maybe_crash(point: str) -> None:
    """Exit the process at once with probability ``active_points()[point]``; a no-op when not configured."""
    probability = active_points().get(point, 0.0)
    if probability and random.random() < probability and _armed():
        # One line on stderr so a chaos test can count the crashes it caused; then no cleanup at all.
        sys.stderr.write(f"{MARKER} {point} (pid {os.getpid()})\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
