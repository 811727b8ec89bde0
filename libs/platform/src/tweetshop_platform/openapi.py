"""Every service's ``/openapi.json`` documents its errors the way ``http.install_common`` answers them.

FastAPI documents a 422 as ``{"detail": [...]}`` (its own ``HTTPValidationError``), and nothing at all for
the 401/403/404/409/413 a route may answer; every error here is ``{"error", "message", "details"?}`` instead
(``http.error_body``). This rewrites the document once: each 4xx/5xx response without a body schema of its
own, and a ``default`` response for any other status, refer to the one ``Error`` schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_REF = "#/components/schemas/Error"
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "A stable code, e.g. validation_error, not_found, unauthorized"},
        "message": {"type": "string", "description": "What went wrong, for a person"},
        "details": {"type": "object", "description": "More about it (validation_error: the problems)"},
    },
}
_FASTAPI_VALIDATION_REFS = ("#/components/schemas/HTTPValidationError", "#/components/schemas/ValidationError")
_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": ERROR_REF}}}


def _is_fastapi_validation_error(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref") in _FASTAPI_VALIDATION_REFS


def document_errors(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with every error response described as ``Error`` (changed in place)."""
    document.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path_item in document.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for status, response in responses.items():
                if status[:1] in {"4", "5"} and ("content" not in response or _is_fastapi_validation_error(response)):
                    response["content"] = _error_content()
            responses.setdefault("default", {"description": "An error", "content": _error_content()})
    schemas = document["components"]["schemas"]
    for ref in _FASTAPI_VALIDATION_REFS:
        schemas.pop(ref.rsplit("/", 1)[1], None)  # no longer referred to
    return document


def install_error_documentation(app: FastAPI) -> None:
    """Serve ``document_errors`` of the app's generated document as its ``/openapi.json``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
