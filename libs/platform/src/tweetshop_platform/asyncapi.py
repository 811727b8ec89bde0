"""AsyncAPI documents served by every service: the whole system's, and the part one service sends and receives.

Both are generated from the contract code (``tweetshop_contracts.schema_export``), the
generator of the checked-in ``docs/asyncapi.json``; a service's own document keeps the
channels it sends to or receives from, its operations, and what those refer to.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from tweetshop_contracts import schema_export
from tweetshop_contracts.system import SYSTEM

JsonObject = dict[str, Any]


@functools.cache
def system_document() -> JsonObject:
    """The AsyncAPI 3.0 document of every v1 topic (as in docs/asyncapi.json)."""
    try:
        # Example messages live in the repository (libs/contracts/examples), not in the installed package.
        examples = schema_export.load_examples(schema_export.find_repo_root() / schema_export.EXAMPLES_DIR)
    except FileNotFoundError:
        examples = {}
    return schema_export.asyncapi_document(examples)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _operation_owner(operation_id: str) -> str:
    # Operation ids are "<service>Sends<Channel>" / "<service>Receives<Channel>" (schema_export.asyncapi_document).
    for verb in ("Sends", "Receives"):
        if verb in operation_id:
            return operation_id.split(verb, 1)[0]
    return ""


def service_document(service: str, system: JsonObject | None = None) -> JsonObject:
    """The part of the system document that ``service`` takes part in: its operations and their channels."""
    doc = copy.deepcopy(system if system is not None else system_document())
    operations = {k: v for k, v in doc["operations"].items() if _operation_owner(k) == service}
    channel_ids = {op["channel"]["$ref"].rsplit("/", 1)[-1] for op in operations.values()}
    channels = {k: v for k, v in doc["channels"].items() if k in channel_ids}
    # Keep the components the kept parts point at, following references inside components too.
    wanted: dict[str, set[str]] = {"messages": set(), "schemas": set()}
    pending = list(_refs(channels)) + list(_refs(operations))
    while pending:
        parts = pending.pop().split("/")
        if len(parts) != 4 or parts[:2] != ["#", "components"] or parts[2] not in wanted:
            continue  # a reference into the kept channels themselves
        kind, name = parts[2], parts[3]
        if name not in wanted[kind]:
            wanted[kind].add(name)
            pending.extend(_refs(doc["components"][kind][name]))
    doc["components"] = {kind: {k: doc["components"][kind][k] for k in sorted(names)} for kind, names in wanted.items()}
    doc["channels"] = channels
    doc["operations"] = operations
    doc["id"] = f"urn:tweetshop:{service}"
    doc["info"] = {
        **doc["info"],
        "title": f"tweetshop {service} events",
        "description": f"What {service} publishes and consumes; the whole system is at /asyncapi/system.json. "
        + doc["info"]["description"],
    }
    return doc


def install_asyncapi(app: FastAPI, service: str) -> None:
    """Serve ``GET /asyncapi.json`` (this service) and ``GET /asyncapi/system.json`` (every topic)."""

    own = functools.cache(lambda: service_document(service))

    @app.get(
        "/asyncapi.json",
        operation_id="getServiceAsyncApi",
        tags=["operations"],
        summary=f"AsyncAPI 3.0: the topics {service} sends and receives",
    )
    async def asyncapi_of_service() -> JSONResponse:
        return JSONResponse(own())

    @app.get(
        "/asyncapi/system.json",
        operation_id="getSystemAsyncApi",
        tags=["operations"],
        summary="AsyncAPI 3.0: every topic of the system",
    )
    async def asyncapi_of_system() -> JSONResponse:
        return JSONResponse(system_document())


# Every service that sends or receives (the declaration in tweetshop_contracts.system): one document each.
SERVICES: tuple[str, ...] = tuple(s.name for s in SYSTEM.with_kafka())


def render(document: JsonObject) -> str:
    """The checked-in form of a document: sorted keys, two-space indent, final newline."""
    import json

    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or ``--check``) docs/asyncapi/<service>.json from the checked-in system document."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--check", action="store_true", help="exit 1 when a checked-in file is stale")
    args = parser.parse_args(argv)
    system = json.loads((args.docs / "asyncapi.json").read_text(encoding="utf-8"))
    stale = []
    for service in SERVICES:
        path = args.docs / "asyncapi" / f"{service}.json"
        text = render(service_document(service, system))
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(str(path))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("stale per-service AsyncAPI documents (run python -m tweetshop_platform.asyncapi):", *stale)
        return 1
    print(f"per-service AsyncAPI documents {'up to date' if not stale else 'written'}: docs/asyncapi/<service>.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
