"""The AsyncAPI documents (``docs/asyncapi.json``, ``docs/asyncapi/<service>.json``) are valid AsyncAPI.

Each is validated against the official JSON Schema of the AsyncAPI version it declares (its ``asyncapi`` field),
vendored from the npm package ``@asyncapi/specs`` in ``vendor/asyncapi-specs/`` (see its README: version, licence,
sha256). The schema's ``$ref``s resolve offline: the bundled file holds every AsyncAPI definition under its
``$id``, ``jsonschema`` ships the draft-07 meta-schema, and the registry refuses to retrieve anything else (no
network at test time). Beyond the schema, every local ``$ref`` of a document (``#/channels/...``) must land on
something in it, as an AsyncAPI parser requires.

That the documents are current (what the generator writes) is ``tests/ops/test_service_asyncapi_documents.py``;
the unit tests at the end show the validation refuses broken documents, so it cannot pass by finding nothing.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

ROOT = Path(__file__).resolve().parents[2]
SPECS = Path(__file__).resolve().parent / "vendor" / "asyncapi-specs"
DOCUMENTS = sorted(
    [ROOT / "docs" / "asyncapi.json", *(ROOT / "docs" / "asyncapi").glob("*.json")],
    key=lambda path: path.relative_to(ROOT).as_posix(),
)


def _refuse(uri: str) -> Resource[Any]:
    """The registry's ``retrieve``: a reference the vendored schema does not hold is an error, never a download."""
    raise NoSuchResource(ref=uri)


@functools.cache
def schema_for(version: str) -> dict[str, Any]:
    """The vendored schema of AsyncAPI ``version`` (``<version>.json``); a version without one is a LookupError."""
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise LookupError(f"not an AsyncAPI version: {version!r}")
    path = SPECS / f"{version}.json"
    if not path.is_file():
        raise LookupError(f"no vendored AsyncAPI {version} schema in {SPECS} (see its README.md to add one)")
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert schema["$schema"].rstrip("#") == "http://json-schema.org/draft-07/schema", "the schema is draft-07"
    return schema


def registry_for(version: str) -> Registry[Any]:
    """The schema of ``version`` under its ``$id`` (its bundled definitions come with it), and nothing to fetch.

    ``jsonschema`` adds the meta-schemas it ships (draft-07) to it; without an explicit registry it would fall back
    to downloading unknown references."""
    schema = schema_for(version)
    registry: Registry[Any] = Registry(retrieve=_refuse)  # type: ignore[call-arg]
    return registry.with_resource(schema["$id"], Resource.from_contents(schema)).crawl()


@functools.cache
def validator_for(version: str) -> Draft7Validator:
    """The validator of AsyncAPI ``version``."""
    return Draft7Validator(schema_for(version), registry=registry_for(version))


def problems(document: dict[str, Any]) -> list[str]:
    """What makes ``document`` invalid AsyncAPI: schema errors, then local ``$ref``s that land nowhere."""
    found = [
        f"{error.json_path}: {error.message[:300]}"
        for error in sorted(validator_for(str(document.get("asyncapi"))).iter_errors(document), key=str)
    ]
    found += [f"{where}: $ref {ref!r} lands on nothing in the document" for where, ref in dangling_refs(document)]
    return found


def local_refs(node: Any, where: str = "$") -> Iterator[tuple[str, str]]:
    """Every ``$ref`` in ``node`` (``(json path, reference)``)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield where, value
            else:
                yield from local_refs(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from local_refs(value, f"{where}[{index}]")


def dangling_refs(document: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``$ref``s that are not a JSON pointer (``#/...``) to a part of ``document``: the generator writes only
    local ones, so a remote one is as wrong as a broken one."""
    dangling = []
    for where, ref in local_refs(document):
        if not ref.startswith("#/"):
            dangling.append((where, ref))
            continue
        node: Any = document
        for token in ref[2:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                dangling.append((where, ref))
                break
    return dangling


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# --- the checked-in documents -------------------------------------------------------------------------------------


def test_there_is_a_system_document_and_one_per_service() -> None:
    from tweetshop_platform.asyncapi import SERVICES

    names = {_name(path) for path in DOCUMENTS}
    assert "docs/asyncapi.json" in names
    assert {f"docs/asyncapi/{service}.json" for service in SERVICES} <= names


@pytest.mark.parametrize("path", DOCUMENTS, ids=_name)
def test_each_asyncapi_document_is_valid_against_the_specification_it_declares(path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict) and "asyncapi" in document, f"{_name(path)} declares no `asyncapi` version"
    found = problems(document)
    assert not found, f"{_name(path)} is not valid AsyncAPI {document['asyncapi']}:\n" + "\n".join(found)


def test_the_vendored_schema_is_the_one_its_readme_names() -> None:
    readme = (SPECS / "README.md").read_text(encoding="utf-8")
    for schema in SPECS.glob("*.json"):
        digest = hashlib.sha256(schema.read_bytes()).hexdigest()
        assert f"| `{schema.name}` | `{digest}` |" in readme, f"{schema.name} changed: update {SPECS}/README.md"
    assert (SPECS / "LICENSE").is_file() and (SPECS / "NOTICE").is_file(), "Apache-2.0 asks for both"


# --- the checker refuses what it should (the system document, broken in memory) -----------------------------------


def _system() -> dict[str, Any]:
    return dict(json.loads((ROOT / "docs" / "asyncapi.json").read_text(encoding="utf-8")))


def _set_first(section: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda document: next(iter(document[section].values())).__setitem__(key, value)


BREAKAGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "no info": lambda document: document.pop("info"),
    "info without a version": lambda document: document["info"].pop("version"),
    "an unknown top-level field": lambda document: document.__setitem__("topics", {}),
    "a 2.x action": _set_first("operations", "action", "publish"),
    "an operation without a channel": lambda document: next(iter(document["operations"].values())).pop("channel"),
    "a channel address that is not a string": _set_first("channels", "address", 5),
    "a kafka binding with negative partitions": lambda document: next(iter(document["channels"].values()))["bindings"][
        "kafka"
    ].__setitem__("partitions", -1),
    "a dangling channel $ref": _set_first("operations", "channel", {"$ref": "#/channels/noSuchChannel"}),
    "a remote $ref": _set_first("operations", "channel", {"$ref": "https://example.com/asyncapi.json#/x"}),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_document_is_refused(breakage: str) -> None:
    document = _system()
    assert not problems(document)
    broken = copy.deepcopy(document)
    BREAKAGES[breakage](broken)
    assert problems(broken), f"{breakage} went unnoticed"


@pytest.mark.parametrize("version", ["2.9.9", "4.0.0", "None", "../3.0.0"])
def test_a_version_without_a_vendored_schema_is_refused(version: str) -> None:
    document = _system() | {"asyncapi": version}
    with pytest.raises(LookupError):
        problems(document)


def test_a_reference_the_vendored_schema_lacks_is_an_error_not_a_download() -> None:
    registry = registry_for("3.0.0")
    assert registry.contents("http://asyncapi.com/definitions/3.0.0/operation.json"), "bundled definitions resolve"
    refers_out = Draft7Validator(
        {"$ref": "https://asyncapi.com/definitions/3.0.0/not-vendored.json"}, registry=registry
    )
    with pytest.raises(Unresolvable):
        refers_out.validate({})
    refers_to_draft7 = Draft7Validator({"$ref": "http://json-schema.org/draft-07/schema#"}, registry=registry)
    with pytest.raises(ValidationError):  # the meta-schema is shipped with jsonschema: resolved, and applied
        refers_to_draft7.validate({"type": 5})
