"""The `tweetshop` command's pieces that need no broker: settings, messages, progress, tables, parsing."""

from __future__ import annotations

import io
import uuid

import pytest
from pydantic import ValidationError
from tweetshop_cli import dlq
from tweetshop_cli.connect import CommandError, describe_dsn
from tweetshop_cli.main import build_parser, load_settings
from tweetshop_cli.output import table
from tweetshop_cli.progress import Progress
from tweetshop_cli.records import Message
from tweetshop_cli.tail import describe
from tweetshop_contracts import StockReserved


def test_options_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS", "from-env:9092")
    monkeypatch.setenv("TWEETSHOP_TOPIC_NAMESPACE", "env.")
    from_env = load_settings(build_parser().parse_args(["lag"]))
    assert (from_env.kafka_bootstrap_servers, from_env.topic_namespace) == ("from-env:9092", "env.")
    overridden = load_settings(build_parser().parse_args(["--bootstrap-servers", "opt:1", "--namespace", "", "lag"]))
    assert (overridden.kafka_bootstrap_servers, overridden.topic_namespace) == ("opt:1", "")


def test_a_bad_option_is_refused_like_a_bad_environment_variable() -> None:
    # main() turns this into exit code 2 (tests/ops/test_ops_cli_errors.py runs the real command).
    with pytest.raises(ValidationError, match="connect_timeout_s"):
        load_settings(build_parser().parse_args(["--timeout", "0", "lag"]))


def test_a_database_address_is_described_without_its_password() -> None:
    assert describe_dsn("postgresql://feed:s3cret@db.example:6432/tweetshop") == "feed@db.example:6432/tweetshop"


def test_a_dead_letter_decodes_with_its_original_topics_contract() -> None:
    event = StockReserved(
        producer="catalog", correlation_id="c-1", order_id=uuid.uuid4(), product_id=uuid.uuid4(), quantity=1
    )
    parked = Message(
        "catalog.reservations.v1.dlq",
        2,
        9,
        b"k",
        event.to_bytes(),
        {"dlq_original_topic": "catalog.reservations.v1", "dlq_error": "boom", "dlq_consumer_group": "checkout.x"},
    )
    assert parked.contract_topic == "catalog.reservations.v1"
    assert parked.decode() == event
    line = describe(parked)
    assert "StockReserved" in line and "PARKED by checkout.x: boom" in line and "correlation_id=c-1" in line


def test_an_invalid_message_is_shown_as_invalid_with_its_value() -> None:
    line = describe(Message("checkout.orders.v1", 0, 3, None, b"not json"))
    assert line.startswith("INVALID checkout.orders.v1 p0@3") and "not json" in line


def test_dlq_names_and_positions() -> None:
    assert dlq.dlq_of("checkout.orders.v1") == dlq.dlq_of("checkout.orders.v1.dlq") == "checkout.orders.v1.dlq"
    assert dlq._parse_at("p3@12") == dlq._parse_at("3@12") == (3, 12)
    with pytest.raises(CommandError, match="PARTITION@OFFSET"):
        dlq._parse_at("twelve")


def test_progress_writes_a_final_line_when_not_on_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress("replaying", 4, stream=stream)
    progress.advance(3)
    progress.advance()
    progress.finish()
    assert stream.getvalue().splitlines()[-1] == "replaying: 4/4 (100%)"
    silent = io.StringIO()
    Progress("x", 1, enabled=False, stream=silent).finish()
    assert silent.getvalue() == ""


def test_tables_align_numbers_right_and_show_missing_values_as_dashes() -> None:
    text = table(("GROUP", "LAG"), [("a.long.group", 5), ("b", None)], right=(1,))
    assert text.splitlines() == ["GROUP         LAG", "a.long.group    5", "b               -"]
