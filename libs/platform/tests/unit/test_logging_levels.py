"""What every process logs at INFO: its own events, not a library's line per request (configure_logging)."""

from __future__ import annotations

import logging

import pytest
from tweetshop_platform.logs import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in ("stripe", "aiokafka", "tweetshop.test")}
    yield None
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, was in levels.items():
        logging.getLogger(name).setLevel(was)


def test_stripe_python_says_only_what_went_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("checkout", "INFO", "json")
    logging.getLogger("stripe").info("message='Request to Stripe api' method=post")
    logging.getLogger("stripe").warning("message='retrying' num_retries=1")
    logging.getLogger("tweetshop.test").info("order placed")
    out = capsys.readouterr().out
    assert "Request to Stripe api" not in out
    assert "retrying" in out and "order placed" in out
