"""Each service's AsyncAPI document is checked in, and matches what the code generates from the system one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tweetshop_platform.asyncapi import SERVICES, render, service_document

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("service", SERVICES)
def test_the_checked_in_asyncapi_of_each_service_is_current(service: str) -> None:
    system = json.loads((DOCS / "asyncapi.json").read_text(encoding="utf-8"))
    checked_in = (DOCS / "asyncapi" / f"{service}.json").read_text(encoding="utf-8")
    assert checked_in == render(service_document(service, system)), (
        "stale: run `python -m tweetshop_platform.asyncapi` and commit docs/asyncapi/"
    )
    document = json.loads(checked_in)
    assert document["operations"], f"{service} sends or receives something"
    assert all(op_id.startswith(service) for op_id in document["operations"])
