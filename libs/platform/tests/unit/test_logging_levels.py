"""What every process logs at INFO: its own events, not a library's line per request (configure_logging). Run in a
process of its own: configure_logging sets up the process's logging for good (structlog caches its loggers)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging
from tweetshop_platform.logs import configure_logging
configure_logging("checkout", "INFO", "json")
logging.getLogger("stripe").info("message='Request to Stripe api' method=post")
logging.getLogger("stripe").warning("message='retrying' num_retries=1")
logging.getLogger("tweetshop.test").info("order placed")
"""


def test_stripe_python_says_only_what_went_wrong() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Request to Stripe api" not in out
    assert "retrying" in out and "order placed" in out
