"""`tweetshop` fails fast and clearly: exit code 2 naming the broker or database it could not reach, 1 when the
request itself cannot be met, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tweetshop_devstack.infra import free_port


@pytest.mark.parametrize(
    "command",
    [["lag"], ["tail", "checkout.orders.v1"], ["dlq", "list"], ["trace", "00000000-0000-0000-0000-000000000001"]],
    ids=lambda c: c[0],
)
def test_an_unreachable_broker_exits_2_naming_its_address(make_cli: Callable[..., Any], command: list[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    result = make_cli({"TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS": address, "TWEETSHOP_CONNECT_TIMEOUT_S": "3"})(*command)
    assert result.code == 2, result
    assert f"cannot reach the Kafka broker at {address}" in result.stderr
    assert "Traceback" not in result.stderr and not result.stdout


def test_an_unreachable_database_exits_2_naming_its_address(make_cli: Callable[..., Any], kafka_bootstrap: str) -> None:
    port = free_port()
    cli = make_cli(
        {
            "TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TWEETSHOP_DATABASE_URL": f"postgresql://feed:secret-password@127.0.0.1:{port}/tweetshop",
            "TWEETSHOP_CONNECT_TIMEOUT_S": "3",
        }
    )
    result = cli("replay", "feed.products", "--dry-run")  # a dry run needs no operator key
    assert result.code == 2, result
    assert f"cannot connect to the database at feed@127.0.0.1:{port}/tweetshop" in result.stderr
    assert "secret-password" not in result.stderr and "Traceback" not in result.stderr


def test_requests_that_cannot_be_met_exit_1_with_the_reason(make_cli: Callable[..., Any], kafka_bootstrap: str) -> None:
    cli = make_cli({"TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "TWEETSHOP_TOPIC_NAMESPACE": "nobody."})
    missing = cli("tail", "checkout.orders.v1")
    assert missing.code == 1 and "no topic 'nobody.checkout.orders.v1'" in missing.stderr, missing
    not_an_id = cli("trace", "not-an-order")
    assert not_an_id.code == 1 and "must be a UUID" in not_an_id.stderr, not_an_id
    bad_setting = cli("lag", env={"TWEETSHOP_CONNECT_TIMEOUT_S": "-1"})
    assert bad_setting.code == 2 and "invalid setting" in bad_setting.stderr, bad_setting


def test_the_tweetshop_command_is_installed_next_to_python() -> None:
    script = Path(sys.executable).with_name("tweetshop")
    assert script.exists(), f"{script} missing: install libs/cli (`pip install -e libs/cli`, the lead's Makefile)"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for command in ("lag", "tail", "dlq", "replay", "trace"):
        assert command in result.stdout


def test_an_operator_command_whose_key_cannot_be_confirmed_exits_2_naming_the_service(
    make_cli: Callable[..., Any], kafka_bootstrap: str
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    cli = make_cli(
        {
            "TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "TWEETSHOP_OPERATOR_KEY": "some-key",
            "TWEETSHOP_OPERATOR_CHECK_URL": nobody,
            "TWEETSHOP_CONNECT_TIMEOUT_S": "3",
        }
    )
    for command in (["dlq", "replay", "checkout.orders.v1", "--yes"], ["dlq", "dismiss", "checkout.orders.v1"]):
        result = cli(*command)
        assert result.code == 2, result
        assert f"cannot confirm the operator key: {nobody}/ops/operator does not answer" in result.stderr
        assert "some-key" not in result.stderr and "Traceback" not in result.stderr
    without_key = cli("replay", "feed.products", "--yes", env={"TWEETSHOP_OPERATOR_KEY": ""})
    assert without_key.code == 1 and "set TWEETSHOP_OPERATOR_KEY" in without_key.stderr, without_key
