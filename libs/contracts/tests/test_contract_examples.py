"""One real example message per event: it decodes with decode_event and matches its checked-in JSON Schema.

The `jsonschema` package is not a dependency here, so the schema check uses the small
validator below; it refuses any keyword it does not implement, so a schema that
starts using one fails loudly instead of passing unchecked.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tweetshop_contracts import EVENT_TYPES, Envelope, OrderPaid, decode_event, schema_export, topology

ROOT = schema_export.find_repo_root(Path(__file__).resolve())
EXAMPLES = ROOT / schema_export.EXAMPLES_DIR
SCHEMAS = ROOT / schema_export.SCHEMA_DIR

_IGNORED = {"title", "description", "default", "examples", "$schema", "$defs", "x-tweetshop"}
_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}

_BOUNDS: dict[str, Any] = {
    "minimum": lambda v, bound: v >= bound,
    "maximum": lambda v, bound: v <= bound,
    "exclusiveMinimum": lambda v, bound: v > bound,
    "exclusiveMaximum": lambda v, bound: v < bound,
}


def _format_ok(fmt: str, value: str) -> bool:
    try:
        if fmt == "uuid":
            return str(uuid.UUID(value)) == value.lower()
        if fmt == "date-time":
            return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False
    raise AssertionError(f"the test validator does not know format {fmt!r}")


def schema_errors(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> list[str]:
    """Errors of ``value`` against ``schema`` (the subset of JSON Schema 2020-12 pydantic writes)."""
    errors: list[str] = []
    for keyword, arg in schema.items():
        if keyword in _IGNORED:
            continue
        if keyword == "$ref":
            target: Any = root
            for part in arg.removeprefix("#/").split("/"):
                target = target[part]
            errors += schema_errors(value, target, root, path)
        elif keyword == "type":
            if not _TYPES[arg](value):
                errors.append(f"{path}: {value!r} is not of type {arg}")
        elif keyword == "properties":
            for name, sub in arg.items():
                if isinstance(value, dict) and name in value:
                    errors += schema_errors(value[name], sub, root, f"{path}.{name}")
        elif keyword == "items":
            if isinstance(value, list):
                for i, item in enumerate(value):
                    errors += schema_errors(item, arg, root, f"{path}[{i}]")
        elif keyword in ("minItems", "maxItems"):
            if isinstance(value, list) and not (len(value) >= arg if keyword == "minItems" else len(value) <= arg):
                errors.append(f"{path}: {len(value)} items breaks {keyword} {arg}")
        elif keyword == "required":
            errors += [f"{path}: {name!r} is required" for name in arg if isinstance(value, dict) and name not in value]
        elif keyword == "anyOf":
            if all(schema_errors(value, sub, root, path) for sub in arg):
                errors.append(f"{path}: {value!r} matches none of {arg}")
        elif keyword == "const":
            if value != arg:
                errors.append(f"{path}: {value!r} is not {arg!r}")
        elif keyword == "enum":
            if value not in arg:
                errors.append(f"{path}: {value!r} is not one of {arg}")
        elif keyword in _BOUNDS:
            if _TYPES["number"](value) and not _BOUNDS[keyword](value, arg):
                errors.append(f"{path}: {value!r} breaks {keyword} {arg}")
        elif keyword in ("minLength", "maxLength"):
            if isinstance(value, str) and not (len(value) >= arg if keyword == "minLength" else len(value) <= arg):
                errors.append(f"{path}: {value!r} breaks {keyword} {arg}")
        elif keyword == "pattern":
            if isinstance(value, str) and not re.search(arg, value):
                errors.append(f"{path}: {value!r} does not match {arg}")
        elif keyword == "format":
            if isinstance(value, str) and not _format_ok(arg, value):
                errors.append(f"{path}: {value!r} is not a {arg}")
        else:
            raise AssertionError(f"the test validator does not implement JSON Schema keyword {keyword!r}: add it")
    return errors


def example(event: type[Envelope]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"{event.__name__}.json").read_text())
    return data


def published_schema(event: type[Envelope]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS / f"{schema_export.schema_name(event)}.json").read_text())
    return data


def test_there_is_exactly_one_example_per_event_type() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.json")) == sorted(e.__name__ for e in EVENT_TYPES)


@pytest.mark.parametrize("event", EVENT_TYPES, ids=lambda e: e.__name__)
def test_the_example_decodes_from_its_topic_into_its_event_type_unchanged(event: type[Envelope]) -> None:
    raw = (EXAMPLES / f"{event.__name__}.json").read_bytes()

    decoded = decode_event(event.TOPIC, raw)

    assert type(decoded) is event
    # Every field is in the example and nothing else is: exactly what a producer writes.
    assert decoded.model_dump(mode="json") == json.loads(raw), (
        f"update {schema_export.EXAMPLES_DIR}/{event.__name__}.json: it must show every field a producer writes"
    )


@pytest.mark.parametrize("event", EVENT_TYPES, ids=lambda e: e.__name__)
def test_the_example_is_valid_against_its_checked_in_json_schema(event: type[Envelope]) -> None:
    schema = published_schema(event)

    assert schema_errors(example(event), schema, schema) == []


@pytest.mark.parametrize("event", EVENT_TYPES, ids=lambda e: e.__name__)
def test_the_example_comes_from_its_topic_producer(event: type[Envelope]) -> None:
    assert example(event)["producer"] == topology.topic_spec(event.TOPIC).producer


def test_examples_tell_one_story_fancy_in_euros_delivered_in_paris() -> None:
    examples = {event.__name__: example(event) for event in EVENT_TYPES}
    fancy = examples["MerchantRegistered"]
    assert (fancy["handle"], fancy["name"]) == ("fancy", "Fancy")
    assert {e["merchant_id"] for e in examples.values() if "merchant_id" in e} == {fancy["merchant_id"]}
    assert {e["currency"] for e in examples.values() if "currency" in e} == {"EUR"}
    for e in examples.values():
        if "destination" in e:
            assert e["destination"]["city"] == "Paris"
    location = examples["ShipmentLocationUpdated"]
    assert 48.8 < location["lat"] < 48.9 and 2.2 < location["lon"] < 2.5  # inside Paris


def test_the_schema_check_catches_a_broken_message() -> None:
    schema = published_schema(OrderPaid)  # a nested object, uuids, a pattern
    message = example(OrderPaid)
    assert schema_errors(message, schema, schema) == []

    broken = copy.deepcopy(message)
    del broken["payment_intent_id"]
    broken["amount_minor"] = "4900"
    broken["currency"] = "eur"
    broken["order_id"] = "not-a-uuid"
    broken["destination"]["lat"] = 123.0

    errors = "\n".join(schema_errors(broken, schema, schema))
    for where in ("'payment_intent_id' is required", "$.amount_minor", "$.currency", "$.order_id", "$.destination.lat"):
        assert where in errors
    with pytest.raises(ValueError):
        decode_event(OrderPaid.TOPIC, json.dumps(broken).encode())


def test_a_message_on_the_wrong_topic_is_rejected() -> None:
    raw = (EXAMPLES / "OrderPaid.json").read_bytes()

    with pytest.raises(ValueError):
        decode_event("catalog.products.v1", raw)
