"""The compatibility rules of compat.py, on deliberately changed copies of the real v1 schemas."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from tweetshop_contracts import compat, schema_export

ROOT = schema_export.find_repo_root(Path(__file__).resolve())
PUBLISHED = ROOT / schema_export.SCHEMA_DIR
ORDER_PAID = "checkout.orders.v1/OrderPaid"
SHIPMENT_CREATED = "tracking.shipments.v1/ShipmentCreated"


def published(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((PUBLISHED / f"{name}.json").read_text())
    return schema


def kinds_at(changes: list[compat.Change]) -> set[tuple[str, str]]:
    return {(change.kind, change.path) for change in changes}


def test_every_published_schema_is_compatible_with_itself() -> None:
    schemas = schema_export.load_schema_dir(PUBLISHED)
    assert len(schemas) == 22
    assert compat.compare_contracts(schemas, copy.deepcopy(schemas)) == []


def test_a_broken_copy_in_a_folder_reports_a_removed_a_retyped_and_a_new_required_field(tmp_path: Path) -> None:
    broken_dir = tmp_path / "v1"
    shutil.copytree(PUBLISHED, broken_dir)
    path = broken_dir / f"{ORDER_PAID}.json"
    schema = json.loads(path.read_text())
    del schema["properties"]["payment_intent_id"]
    schema["properties"]["amount_minor"] = {"type": "string", "title": "Amount Minor"}
    schema["properties"]["gift_message"] = {"type": "string", "maxLength": 200}
    schema["required"].append("gift_message")
    path.write_text(json.dumps(schema))

    changes = compat.compare_contracts(
        schema_export.load_schema_dir(PUBLISHED), schema_export.load_schema_dir(broken_dir)
    )

    assert kinds_at(changes) == {
        ("removed_field", "OrderPaid.payment_intent_id"),
        ("retyped_field", "OrderPaid.amount_minor"),
        ("new_required_field", "OrderPaid.gift_message"),
    }
    assert all(change.breaking for change in changes)
    assert "integer became string" in str(next(c for c in changes if c.kind == "retyped_field"))


def test_a_removed_field_of_a_nested_object_is_breaking() -> None:
    new = published(ORDER_PAID)
    del new["$defs"]["Destination"]["properties"]["city"]
    new["$defs"]["Destination"]["required"].remove("city")

    changes = compat.compare_event_schemas(published(ORDER_PAID), new, name="OrderPaid")

    assert kinds_at(changes) == {("removed_field", "OrderPaid.destination.city")}


def test_a_new_optional_field_is_compatible() -> None:
    new = published(ORDER_PAID)
    new["properties"]["gift_message"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}

    changes = compat.compare_event_schemas(published(ORDER_PAID), new, name="OrderPaid")

    assert kinds_at(changes) == {("added_optional_field", "OrderPaid.gift_message")}
    assert compat.breaking_changes(changes) == []


def test_a_narrowed_literal_is_breaking_because_old_messages_carry_the_removed_value() -> None:
    new = published(SHIPMENT_CREATED)
    new["properties"]["status"]["enum"].remove("exception")

    changes = compat.compare_event_schemas(published(SHIPMENT_CREATED), new, name="ShipmentCreated")

    assert kinds_at(changes) == {("narrowed_enum", "ShipmentCreated.status")}
    assert '"exception"' in changes[0].detail
    assert changes[0].breaking


def test_a_widened_literal_is_breaking_because_v1_readers_reject_the_new_value() -> None:
    new = published(SHIPMENT_CREATED)
    new["properties"]["status"]["enum"].append("lost")

    changes = compat.compare_event_schemas(published(SHIPMENT_CREATED), new, name="ShipmentCreated")

    assert kinds_at(changes) == {("widened_enum", "ShipmentCreated.status")}
    assert changes[0].breaking


def test_making_a_field_nullable_is_a_retype() -> None:
    new = published(ORDER_PAID)
    new["properties"]["payment_intent_id"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}

    changes = compat.compare_event_schemas(published(ORDER_PAID), new, name="OrderPaid")

    assert kinds_at(changes) == {("retyped_field", "OrderPaid.payment_intent_id")}


def test_a_changed_limit_is_breaking_in_either_direction() -> None:
    for max_length in (100, 500):
        new = published(ORDER_PAID)
        new["properties"]["correlation_id"]["maxLength"] = max_length

        changes = compat.compare_event_schemas(published(ORDER_PAID), new, name="OrderPaid")

        assert kinds_at(changes) == {("changed_constraint", "OrderPaid.correlation_id")}
        assert f"maxLength 200 became {max_length}" in changes[0].detail


def test_a_field_that_becomes_required_is_breaking_and_one_that_becomes_optional_is_not() -> None:
    old = published("catalog.products.v1/ProductListed")
    new = copy.deepcopy(old)
    new["required"].append("description")
    new["required"].remove("title")

    changes = compat.compare_event_schemas(old, new, name="ProductListed")

    assert kinds_at(changes) == {
        ("became_required", "ProductListed.description"),
        ("became_optional", "ProductListed.title"),
    }
    assert [c.kind for c in compat.breaking_changes(changes)] == ["became_required"]


def test_a_removed_event_type_is_breaking_and_a_new_one_is_compatible() -> None:
    old = {ORDER_PAID: published(ORDER_PAID)}
    new = {"checkout.orders.v1/OrderShipped": published(ORDER_PAID)}

    changes = compat.compare_contracts(old, new)

    assert {(c.kind, c.path, c.breaking) for c in changes} == {
        ("removed_event_type", ORDER_PAID, True),
        ("added_event_type", "checkout.orders.v1/OrderShipped", False),
    }


def test_descriptions_titles_examples_and_defaults_can_change_freely() -> None:
    new = published("catalog.products.v1/ProductListed")
    new["description"] = "Another docstring"
    new["properties"]["title"]["title"] = "Product title"  # a *field* named title keeps being compared
    new["properties"]["currency"]["examples"] = ["USD"]
    new["properties"]["status"]["default"] = "delisted"

    assert compat.compare_event_schemas(published("catalog.products.v1/ProductListed"), new) == []


def test_a_field_named_like_a_keyword_is_still_compared() -> None:
    new = published("catalog.products.v1/ProductListed")
    new["properties"]["title"]["maxLength"] = 300

    changes = compat.compare_event_schemas(published("catalog.products.v1/ProductListed"), new, name="ProductListed")

    assert kinds_at(changes) == {("changed_constraint", "ProductListed.title")}


def test_the_report_of_a_breaking_change_says_to_add_a_v2_topic_instead() -> None:
    new = published(ORDER_PAID)
    del new["properties"]["currency"]

    text = compat.report(compat.compare_event_schemas(published(ORDER_PAID), new, name="OrderPaid"))

    assert "BREAKING removed_field at OrderPaid.currency" in text
    assert "`.v2` topic" in text


def _copy_contract_files(root: Path) -> None:
    for relative in (schema_export.SCHEMA_DIR, schema_export.EXAMPLES_DIR):
        shutil.copytree(ROOT / relative, root / relative)
    (root / "docs").mkdir()
    for relative in (schema_export.ASYNCAPI_PATH, schema_export.TOPICS_DOC_PATH):
        shutil.copy(ROOT / relative, root / relative)


def test_export_refuses_to_overwrite_a_v1_schema_incompatibly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _copy_contract_files(tmp_path)
    # The published schema has a field the code no longer has: as if someone deleted it from events.py.
    path = tmp_path / schema_export.SCHEMA_DIR / f"{ORDER_PAID}.json"
    schema = json.loads(path.read_text())
    schema["properties"]["coupon_code"] = {"type": "string"}
    path.write_text(json.dumps(schema))
    before = path.read_text()

    assert schema_export.main(["--root", str(tmp_path)]) == 1
    assert schema_export.main(["--root", str(tmp_path), "--check"]) == 1

    assert path.read_text() == before
    assert "BREAKING removed_field at OrderPaid.coupon_code" in capsys.readouterr().err


def test_check_names_stale_files_and_export_brings_them_up_to_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _copy_contract_files(tmp_path)
    path = tmp_path / schema_export.SCHEMA_DIR / f"{SHIPMENT_CREATED}.json"
    schema = json.loads(path.read_text())
    schema["description"] = "An outdated docstring"
    path.write_text(json.dumps(schema))
    (tmp_path / schema_export.ASYNCAPI_PATH).unlink()

    assert schema_export.main(["--root", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"stale: {schema_export.SCHEMA_DIR / SHIPMENT_CREATED}.json" in err
    assert f"stale: {schema_export.ASYNCAPI_PATH}" in err

    assert schema_export.main(["--root", str(tmp_path)]) == 0
    assert schema_export.main(["--root", str(tmp_path), "--check"]) == 0
    assert path.read_text() == (ROOT / schema_export.SCHEMA_DIR / f"{SHIPMENT_CREATED}.json").read_text()
