"""Generated hostile input against every operation of each service's own ``/openapi.json`` (schemathesis).

For each operation, schemathesis generates requests that fit the documented schema (positive) and requests
that break it (negative: wrong types, out-of-range numbers, missing fields, odd strings...). Every request
carries a valid bearer credential, and part of them aim at real objects (a merchant, a product, a tweet, a
paid order, its shipment), so that they get past authentication and reach the validation and the handler.
Each answer must:

- never be a server error (5xx);
- match the schema the service documents for that status (error answers included);
- come with a content type the service documents for it.

Reproducible: a fixed seed, no example database. A larger run::

    TWEETSHOP_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest tests/security
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

EXAMPLES = int(os.environ.get("TWEETSHOP_FUZZ_EXAMPLES", "20"))  # per operation and mode
SEED = int(os.environ.get("TWEETSHOP_FUZZ_SEED", "20240601"))
REQUEST_TIMEOUT_S = 10.0
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@dataclass(frozen=True)
class Finding:
    """One distinct failure: the first request that showed it, and what came back."""

    operation: str
    mode: str
    check: str
    status: int | None
    request: str
    response: str

    def report(self) -> str:
        return (
            f"{self.operation} [{self.mode}] {self.check} (status {self.status})\n"
            f"  request:  {self.request}\n"
            f"  response: {self.response}"
        )


@pytest.fixture(autouse=True)
def hypothesis_writes_nothing_into_the_repository(tmp_path: Path) -> Iterator[None]:
    """No example database (settings below); its caches (charmap, constants) go to the test's tmp dir."""
    set_hypothesis_home_dir(tmp_path / "hypothesis")
    try:
        yield
    finally:
        set_hypothesis_home_dir(None)


def _content_type(response: Any) -> str:
    values = response.headers.get("content-type") or [""]  # schemathesis: lower-case names, lists of values
    return str(values[0])


def _describe(response: Any) -> str:
    return f"{response.status_code} {_content_type(response)} {response.text[:600]!r}"


def _strategy(operation: Any, mode: GenerationMode, target: Any) -> Any:
    """Cases as generated, with real ids in path and query, and with bodies aimed at real objects."""
    overrides = target.overrides.get(operation.label, [])
    variants = [operation.as_strategy(generation_mode=mode)]
    variants += [operation.as_strategy(generation_mode=mode, **o) for o in overrides]
    aim = target.aim.get(operation.label)
    if aim is not None:
        variants += [v.map(lambda case, aim=aim: _aimed(case, aim)) for v in variants]
    return st.one_of(*variants)


def _aimed(case: Any, aim: Any) -> Any:
    aim(case)
    return case


def fuzz(target: Any) -> tuple[list[Finding], dict[str, int]]:
    """Run every operation of the target's schema in both modes: every distinct failure, and requests sent."""
    schema = schemathesis.openapi.from_url(f"{target.base_url}/openapi.json", timeout=REQUEST_TIMEOUT_S)
    # An event stream never ends on its own: its first event (the snapshot) is enough to check.
    schema.config.max_stream_events = 1
    findings: dict[tuple[str, str, str, int | None], Finding] = {}
    sent: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        sent[operation.label] = 0
        for mode in MODES:
            _fuzz_operation(target, operation, mode, findings, sent)
    return list(findings.values()), sent


def _fuzz_operation(
    target: Any,
    operation: Any,
    mode: GenerationMode,
    findings: dict[tuple[str, str, str, int | None], Finding],
    sent: dict[str, int],
) -> None:
    label = operation.label
    method, route = operation.method.upper(), operation.path

    def record(check: str, status: int | None, response: str, curl: str) -> None:
        # The first request of each kind of failure is kept: the report stays short, the run goes on.
        finding = Finding(label, mode.value, check, status, curl, response)
        findings.setdefault((label, mode.value, check, status), finding)

    @hypothesis.seed(SEED)
    @hypothesis.settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # failures are collected, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
    )
    @hypothesis.given(case=_strategy(operation, mode, target))
    def send(case: Any) -> None:
        token = target.credential(method, route, dict(case.query or {}))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        curl = case.as_curl_command(headers=headers, base_url=target.base_url)
        sent[label] += 1
        try:
            response = case.call(base_url=target.base_url, headers=headers, timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # a hang, a dropped connection: as bad as a 500
            record("request failed", None, repr(exc), curl)
            return
        try:
            body = response.json() if "json" in _content_type(response) else None
        except ValueError:
            body = None
        target.observe(method, route, response.status_code, body)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                record(_check_of(failure), response.status_code, _describe(response), curl)

    try:
        send()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        # Negative mode and nothing to break (no parameters, no body): the positive run covers it.


def _check_of(failure: Failure) -> str:
    return f"{failure.title}: {failure.message}".strip().replace("\n", " ")[:400]


@pytest.mark.parametrize("service", ["catalog", "feed", "checkout", "tracking"])
def test_generated_requests_never_get_a_server_error_and_every_response_matches_its_schema(
    service: str, request: pytest.FixtureRequest
) -> None:
    target = request.getfixturevalue(f"{service}_target")
    findings, sent = fuzz(target)
    assert sent, f"{service}: no operation was exercised"
    unexercised = [label for label, count in sent.items() if count == 0]
    assert not unexercised, f"{service}: never exercised {unexercised}"
    assert not findings, f"{service}: {len(findings)} distinct failures\n\n" + "\n\n".join(f.report() for f in findings)
