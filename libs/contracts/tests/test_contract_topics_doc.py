"""docs/topics.md and the producer/consumer table agree with the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tweetshop_contracts import EVENT_TYPES, schema_export, topics, topology
from tweetshop_platform.settings import ServiceSettings

ROOT = schema_export.find_repo_root(Path(__file__).resolve())
DOC = (ROOT / schema_export.TOPICS_DOC_PATH).read_text()
PLATFORM_CONSUMER = ROOT / "libs/platform/src/tweetshop_platform/consumer.py"


def test_every_topic_has_one_spec_with_a_producer_and_consumers() -> None:
    assert [spec.name for spec in topology.TOPICS] == list(topics.ALL_TOPICS)
    for spec in topology.TOPICS:
        assert spec.producer in {"catalog", "feed", "checkout", "tracking"}
        assert spec.consumers, f"{spec.name} has no consumer"
        assert topology.events_of(spec.name), f"{spec.name} has no event type"


def test_a_topic_has_a_dead_letter_topic_only_when_a_reliable_consumer_reads_it() -> None:
    dead_lettered = {spec.name for spec in topology.TOPICS if spec.dlq()}
    assert dead_lettered == set(topics.ALL_TOPICS) - {topics.TRACKING_LOCATIONS}  # only tracking's live view reads it
    assert topology.topic_spec(topics.CHECKOUT_ORDERS).dlq() == "checkout.orders.v1.dlq"


def test_every_event_type_is_on_a_documented_topic_with_one_key_per_topic() -> None:
    for event in EVENT_TYPES:
        assert event.TOPIC in topics.ALL_TOPICS
        assert event.KEY_FIELD in event.model_fields
    for spec in topology.TOPICS:
        assert topology.key_field(spec.name)  # raises when the events of a topic disagree on the key


def test_the_doc_names_every_topic_its_dead_letter_topic_and_every_event_type() -> None:
    for spec in topology.TOPICS:
        assert f"### `{spec.name}`" in DOC
        dlq = spec.dlq()
        assert dlq is None or f"`{dlq}`" in DOC
    for event in EVENT_TYPES:
        assert f"#### `{event.__name__}`" in DOC


def test_the_doc_names_every_dead_letter_header_the_platform_writes() -> None:
    written = set(re.findall(r'"(dlq_[a-z_]+)"', PLATFORM_CONSUMER.read_text()))
    assert written == set(topology.DLQ_HEADERS) | set(topology.DLQ_OPTIONAL_HEADERS)
    for header in written:
        assert f"`{header}`" in DOC


def test_the_doc_states_the_partition_and_retry_defaults_of_the_platform() -> None:
    fields = ServiceSettings.model_fields
    assert fields["kafka_topic_partitions"].default == topology.DEFAULT_PARTITIONS
    assert f"`{topology.PARTITIONS_SETTING}` partitions, {topology.DEFAULT_PARTITIONS} by" in DOC
    assert f"`TWEETSHOP_CONSUMER_MAX_RETRIES`, {fields['consumer_max_retries'].default} by default" in DOC
    assert f"`TWEETSHOP_CONSUMER_BATCH_MAX_RECORDS`, {fields['consumer_batch_max_records'].default} by default" in DOC


def test_the_doc_covers_ordering_personal_data_envelope_versioning_and_dead_letters() -> None:
    for heading in (
        "## The envelope",
        "## Ordering, partitions and delivery",
        "## Personal data",
        "## Dead letters",
        "## Versioning",
    ):
        assert heading in DOC
    for field in schema_export.ENVELOPE_FIELDS:
        assert f"| `{field}` |" in DOC
    for personal in topology.PERSONAL_DATA:
        event, field = personal.split(".")
        assert event in DOC and f"`{field}`" in DOC


def test_the_copy_paste_consumer_compiles_and_follows_the_delivery_rules() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)
    assert len(blocks) == 1
    code = blocks[0]
    ast.parse(code)
    for rule in (
        'auto_offset_reset="earliest"',
        "enable_auto_commit=False",
        "group_id=",
        "await consumer.commit()",
        "decode_event(",
        "event.event_id",
    ):
        assert rule in code
    # The commit comes after the processing, never before it.
    assert code.index("your processing") < code.index("await consumer.commit()")
