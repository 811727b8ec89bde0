"""Each app's ``/openapi.json`` is one a client team can generate from (catalog, feed, checkout, tracking, web app).

For every document:

- it is valid OpenAPI 3 (``openapi-spec-validator``);
- every operation has an ``operationId`` its route chose (``operation_id=``, camelCase), unique in the document:
  FastAPI's generated ones (``get_merchant_merchants__merchant_id__get``) change whenever a function or path is
  renamed, and break every generated client;
- every operation says who may call it: ``security`` names the credentials it takes (``[]``: none), each one in
  ``components.securitySchemes``; a route whose handler reads or checks a credential must take it through a
  credential dependency (``tweetshop_platform.openapi``), and then documents it; without any credential, an
  operation that needs one answers 401 before anything else, and one that needs none never does;
- every error it can answer is declared, with the ``Error`` body: 401 and its credentials' other refusals, 404
  with a path parameter, 413 and 422 with a body, 422 with parameters, 429 where a rate limit applies, and each
  4xx/5xx that the route's own code raises (found by reading the service's source: ``raise NotFound(...)``,
  ``Conflict``, ``DomainError(..., status=503)``..., through the functions it calls in its own package).

The rules read the routes and the source, not a list of operations: a route added later is held to them too.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from openapi_spec_validator import validate
from tweetshop_platform.openapi import ERROR_REF, Credential
from tweetshop_platform.ratelimit import EXEMPT, OPENAPI_KEY

from .conftest import APPS

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
OPERATION_ID = re.compile(r"^[a-z][a-zA-Z0-9]*$")
UNLIMITED_PATHS = {"/healthz", "/readyz", "/metrics"}  # never rate-limited (ratelimit._EXEMPT_PATHS)
# Words in a handler's source that mean it reads or checks a credential itself.
CREDENTIAL_WORDS = ("bearer_token(", "presented_token(", "authorize", "is_operator", '"authorization"')


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


def routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in sorted(route.methods or ()):
                yield method, route


def needs_credential(operation: dict[str, Any]) -> bool:
    """Whether the operation is refused without a credential (``security`` without an empty alternative)."""
    security = operation["security"]
    return bool(security) and {} not in security


@pytest.fixture(scope="module")
def documents(apps: dict[str, FastAPI]) -> dict[str, dict[str, Any]]:
    return {name: app.openapi() for name, app in apps.items()}


@pytest.mark.parametrize("name", APPS)
def test_the_document_is_valid_openapi_3(name: str, documents: dict[str, dict[str, Any]]) -> None:
    document = documents[name]
    assert document["openapi"].startswith("3.")
    validate(document)  # raises OpenAPIValidationError with the path of the first problem


@pytest.mark.parametrize("name", APPS)
def test_every_operation_has_a_chosen_operation_id_unique_in_the_document(
    name: str, apps: dict[str, FastAPI], documents: dict[str, dict[str, Any]]
) -> None:
    unnamed = [f"{m} {r.path}" for m, r in routes(apps[name]) if not r.operation_id]
    assert not unnamed, f"{name}: routes without operation_id= (FastAPI would generate one): {unnamed}"
    ids = [op.get("operationId", "") for _, _, op in operations(documents[name])]
    badly_named = [i for i in ids if not OPERATION_ID.match(i)]
    assert not badly_named, f"{name}: operation ids not in camelCase: {badly_named}"
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"{name}: operation ids used more than once: {duplicates}"


@pytest.mark.parametrize("name", APPS)
def test_every_operation_says_which_credentials_it_takes(name: str, documents: dict[str, dict[str, Any]]) -> None:
    document = documents[name]
    schemes = document.get("components", {}).get("securitySchemes", {})
    for method, path, operation in operations(document):
        label = f"{name}: {method} {path}"
        assert "security" in operation, f"{label}: no security (say [] when it takes no credential)"
        for requirement in operation["security"]:
            for scheme in requirement:
                assert scheme in schemes, f"{label}: security names {scheme!r}, not in securitySchemes"
    for scheme_name, scheme in schemes.items():
        assert scheme.get("description"), f"{name}: {scheme_name} does not say which credential it is"
        if scheme["type"] == "http":
            assert scheme["scheme"] == "bearer", f"{name}: {scheme_name}"


@pytest.mark.parametrize("name", APPS)
def test_a_handler_that_checks_a_credential_takes_it_through_a_credential_dependency(
    name: str, apps: dict[str, FastAPI], documents: dict[str, dict[str, Any]]
) -> None:
    document = documents[name]
    for method, route in routes(apps[name]):
        source = inspect.getsource(route.endpoint)
        operation = document["paths"][route.path_format][method.lower()]
        if any(word in source for word in CREDENTIAL_WORDS):
            assert operation["security"], (
                f"{name}: {method} {route.path} checks a credential in its handler but declares none: take it "
                "with a dependency of tweetshop_platform.openapi (e.g. Depends(MERCHANT_API_KEY))"
            )


def _sample(schema: dict[str, Any]) -> str:
    return str(uuid.uuid4()) if schema.get("format") == "uuid" else "x"


@pytest.mark.parametrize("name", [a for a in APPS if a != "webapp"])  # the web app's gateway checks none itself
async def test_without_a_credential_exactly_the_operations_that_need_one_answer_401(
    name: str, apps: dict[str, FastAPI], documents: dict[str, dict[str, Any]]
) -> None:
    """Credentials are checked before anything touches the database: the answer without one tells, in-process."""
    transport = httpx.ASGITransport(app=apps[name], raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://contract") as http:
        for method, path, operation in operations(documents[name]):
            if operation.get("responses", {}).get("200", {}).get("content", {}).get("text/event-stream") is not None:
                continue  # a live stream: its 401 is the same dependency as getShipment's
            url = path
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    url = url.replace("{" + parameter["name"] + "}", _sample(parameter.get("schema", {})))
            answer = await http.request(method, url)
            label = f"{name}: {method} {path}"
            if needs_credential(operation):
                assert answer.status_code == 401, f"{label} needs a credential, answered {answer.status_code}"
            else:
                assert answer.status_code != 401, f"{label} declares no credential but answered 401"


@pytest.mark.parametrize("name", APPS)
def test_every_error_answer_is_declared_with_the_error_body(
    name: str, apps: dict[str, FastAPI], documents: dict[str, dict[str, Any]]
) -> None:
    document = documents[name]
    limited = getattr(getattr(apps[name].state, "rate_limiter", None), "enabled", False)
    refusals = {c.scheme_name: c.refusals for c in credentials_of(apps[name])}
    missing: list[str] = []
    for method, path, operation in operations(document):
        declared = set(operation["responses"])
        expected: set[int] = set()
        if needs_credential(operation):
            expected.add(401)
        for requirement in operation["security"]:
            for scheme in requirement:
                expected |= set(refusals.get(scheme, {}))
        parameters = operation.get("parameters", [])
        if any(p["in"] == "path" for p in parameters):
            expected.add(404)
        if parameters or "requestBody" in operation:
            expected.add(422)
        if "requestBody" in operation:
            expected.add(413)
        if limited and path not in UNLIMITED_PATHS and operation.get(OPENAPI_KEY) != EXEMPT:
            expected.add(429)
        expected |= raised_by(apps[name], method, path)
        for status in sorted(expected):
            if str(status) not in declared:
                missing.append(f"{method} {path}: {status}")
        for status, response in operation["responses"].items():
            if status[:1] in "45" or status == "default":
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                # 4xx: always the Error body; a 5xx may have a body of its own (/readyz: which check failed).
                assert schema.get("$ref") == ERROR_REF or (status[:1] == "5" and schema), (
                    f"{name}: {method} {path} {status} has no Error body"
                )
    assert not missing, f"{name}: undeclared error answers (responses= on the route): {missing}"


def credentials_of(app: FastAPI) -> set[Credential]:
    found: set[Credential] = set()

    def walk(dependant: Any) -> None:
        for sub in dependant.dependencies:
            if isinstance(sub.call, Credential):
                found.add(sub.call)
            walk(sub)

    for _, route in routes(app):
        walk(route.dependant)
    return found


# --- what a route's own code raises ------------------------------------------------------------------------------

# tweetshop_platform.errors: the class raised → its status.
ERROR_STATUSES = {
    "DomainError": 400,
    "NotFound": 404,
    "Conflict": 409,
    "Unauthorized": 401,
    "Forbidden": 403,
    "Unprocessable": 422,
    "TooManyRequests": 429,
}


def _raised_status(node: ast.Raise, local_errors: dict[str, int]) -> int | None:
    """The status of ``raise Error("...", status=...)``, or None when it is not one of ours."""
    call = node.exc
    if not isinstance(call, ast.Call):
        return None
    if isinstance(call.func, ast.Call):
        # An error class picked at run time, e.g. `raise _ERRORS.get(code, Conflict)(...)`: its default.
        names = [n.id for n in ast.walk(call.func) if isinstance(n, ast.Name) and n.id in ERROR_STATUSES]
        return ERROR_STATUSES[names[-1]] if names else None
    name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", None)
    status = ERROR_STATUSES.get(str(name), local_errors.get(str(name)))
    for keyword in call.keywords:
        if keyword.arg == "status" and isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, int):
            status = keyword.value.value
    return status


class PackageErrors:
    """What the functions of one package raise: per module-level function (``module.name``) and method
    (``*.name``), the statuses it raises itself and the functions it calls, resolved by module where it can be
    (``repository.get_order`` is not ``orders.get_order``)."""

    def __init__(self, package: str) -> None:
        self.raises: dict[str, set[int]] = {}
        self.calls: dict[str, set[str]] = {}
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, package
        # Read, never imported: a package's __main__ would start its server.
        sources = [
            source for directory in spec.submodule_search_locations for source in sorted(Path(directory).rglob("*.py"))
        ]
        self.modules = {source.stem for source in sources}
        for source in sources:
            self._read(source.stem, ast.parse(source.read_text(encoding="utf-8")))

    def _read(self, module: str, tree: ast.Module) -> None:
        local_errors = _error_classes(tree)
        imported = {
            alias.asname or alias.name: f"{node.module.rsplit('.', 1)[-1]}.{alias.name}"
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.level and node.module
            for alias in node.names
        }
        functions = [
            (f"{module}.{n.name}", n) for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        functions += [
            (f"*.{n.name}", n)
            for c in tree.body
            if isinstance(c, ast.ClassDef)
            for n in c.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        for key, function in functions:
            statuses, called = self.scan(function, module, imported, local_errors)
            self.raises.setdefault(key, set()).update(statuses)
            self.calls.setdefault(key, set()).update(called)

    def scan(
        self, function: ast.AST, module: str, imported: dict[str, str], local_errors: dict[str, int]
    ) -> tuple[set[int], set[str]]:
        """The statuses ``function`` raises itself, and the keys of the functions it calls."""
        statuses: set[int] = set()
        called: set[str] = set()
        for node in ast.walk(function):
            if isinstance(node, ast.Raise):
                status = _raised_status(node, local_errors)
                if status is not None:
                    statuses.add(status)
            elif isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name):
                    called.add(imported.get(func.id, f"{module}.{func.id}"))
                elif isinstance(func, ast.Attribute):
                    owner = func.value.id if isinstance(func.value, ast.Name) else None
                    called.add(f"{owner}.{func.attr}" if owner in self.modules else f"*.{func.attr}")
        return statuses, called

    def reachable(self, keys: set[str]) -> set[int]:
        """Every status raised by these functions and the ones they call, transitively."""
        seen: set[str] = set()
        statuses: set[int] = set()
        todo = list(keys)
        while todo:
            key = todo.pop()
            if key in seen or key not in self.raises:
                continue
            seen.add(key)
            statuses |= self.raises[key]
            todo.extend(self.calls[key])
        return statuses


def _error_classes(tree: ast.Module) -> dict[str, int]:
    """Error classes a module defines with a ``status = N`` of their own."""
    found: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if (
                    isinstance(item, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "status" for t in item.targets)
                    and isinstance(item.value, ast.Constant)
                    and isinstance(item.value.value, int)
                ):
                    found[node.name] = item.value.value
    return found


_PACKAGES: dict[str, PackageErrors] = {}


def raised_by(app: FastAPI, method: str, path: str) -> set[int]:
    """The 4xx/5xx statuses the route's handler and its dependencies can raise, through its package's code."""
    statuses: set[int] = set()
    for route_method, route in routes(app):
        if route_method != method or route.path_format != path:
            continue
        for call in [route.endpoint, *[d.call for d in _dependants(route.dependant)]]:
            module = getattr(call, "__module__", "") or ""
            if not inspect.isfunction(call) and not inspect.ismethod(call):
                continue
            package, _, _ = module.partition(".")
            if package not in _PACKAGES:
                _PACKAGES[package] = PackageErrors(package)
            errors = _PACKAGES[package]
            tree = ast.parse(inspect.cleandoc("\n" + inspect.getsource(call)))
            source = importlib.util.find_spec(module)
            imported = _imports_of(source.origin) if source and source.origin else {}
            own, called = errors.scan(tree, module.rsplit(".", 1)[-1], imported, {})
            statuses |= own | errors.reachable(called)
    return {s for s in statuses if s >= 400}


def _imports_of(filename: str) -> dict[str, str]:
    tree = ast.parse(Path(filename).read_text(encoding="utf-8"))
    return {
        alias.asname or alias.name: f"{node.module.rsplit('.', 1)[-1]}.{alias.name}"
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.level and node.module
        for alias in node.names
    }


def _dependants(dependant: Any) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependants(sub)
