"""Every service's ``/openapi.json``: errors the way ``http.install_common`` answers them, and who may call what.

FastAPI documents a 422 as ``{"detail": [...]}`` (its own ``HTTPValidationError``), and nothing at all for
the 401/403/404/409/413 a route may answer; every error here is ``{"error", "message", "details"?}`` instead
(``http.error_body``). This rewrites the document once: each 4xx/5xx response without a body schema of its
own, and a ``default`` response for any other status, refer to the one ``Error`` schema.

Credentials are route dependencies (``MERCHANT_API_KEY``, ``ORDER_ACCESS_TOKEN``, ``COURIER_TOKEN``,
``OPERATOR_KEY``...): a route that takes ``token: Annotated[str, Depends(MERCHANT_API_KEY)]`` gets the presented
bearer token (401 without one), and its operation says so by itself: FastAPI puts the credential in
``components.securitySchemes`` and the operation's ``security``, and ``document_errors`` adds the answers the
credential can be refused with (401, and 403 or 404). An operation that uses no credential says ``security: []``.
Several credentials on one route are alternatives (a refund: the merchant's key or the operator key).

Every operation also declares 413 when it takes a body. Each route names its own ``operation_id=`` (camelCase,
e.g. ``getMerchant``) and the errors only its use case raises (``responses=``: 404 unknown thing, 409, 503...);
tests/contract/test_openapi_documents.py holds every document to that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyQuery, HTTPBearer
from pydantic import SecretStr
from starlette.requests import HTTPConnection

from .auth import bearer_token, operator_only
from .errors import Unauthorized

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
TOO_LARGE = {"description": "The request body is over the service's limit"}


# --- credentials ----------------------------------------------------------------------------------------------


class Credential:
    """What a credential dependency adds to a route's documentation: the answers it can be refused with.

    ``refusals``: status → why, e.g. ``{401: "No key", 403: "Another merchant's key"}``. ``required``: the
    dependency answers 401 without it (else it hands back None, and the route decides). ``anonymous``: the
    operation is also called without any credential (``security`` then also lists ``{}``).
    """

    refusals: dict[int, str]
    required: bool
    anonymous: bool


class BearerCredential(HTTPBearer, Credential):
    """A credential sent as ``Authorization: Bearer <token>``: as a dependency, the presented token (401 without)."""

    def __init__(
        self,
        name: str,
        description: str,
        refusals: Mapping[int, str],
        *,
        required: bool = True,
        anonymous: bool = False,
    ) -> None:
        super().__init__(scheme_name=name, description=description, auto_error=False)
        self.refusals = dict(refusals)
        self.required = required
        self.anonymous = anonymous

    def optional(self, *, anonymous: bool = False) -> BearerCredential:
        """The same credential, documented, that hands back None when absent: the route finds it elsewhere too
        (``?token=``), or, ``anonymous``, the operation is also called without any credential."""
        return BearerCredential(
            self.scheme_name, self.model.description or "", self.refusals, required=False, anonymous=anonymous
        )

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        if self.required:
            return bearer_token(request)
        try:
            return bearer_token(request)
        except Unauthorized:
            return None  # never refused here: the route (or the service behind a gateway) decides


class QueryCredential(APIKeyQuery, Credential):
    """A credential a browser puts in the URL (``?token=``): as a dependency, its value or None."""

    def __init__(self, name: str, parameter: str, description: str, refusals: Mapping[int, str]) -> None:
        super().__init__(name=parameter, scheme_name=name, description=description, auto_error=False)
        self.refusals = dict(refusals)
        self.required = False
        self.anonymous = False

    async def __call__(self, request: HTTPConnection) -> str | None:
        value = request.query_params.get(self.model.name, "").strip()
        return value or None


_NO_TOKEN = "No credential: send `Authorization: Bearer <token>`"
MERCHANT_API_KEY = BearerCredential(
    "merchantApiKey",
    "The merchant's API key (`tsk_...`), answered once by `POST /merchants` of catalog and replaced by "
    "`POST /merchants/{merchant_id}/api-key`. Writes the merchant's products, posts its tweets, refunds its orders.",
    {401: f"{_NO_TOKEN}, or a key that belongs to no merchant", 403: "Not the key of this merchant"},
)
ORDER_ACCESS_TOKEN = BearerCredential(
    "orderAccessToken",
    "The order's access token (`tso_...`), answered by `POST /orders` of checkout: its buyer reads and cancels the "
    "order, and follows its shipment in tracking.",
    {401: _NO_TOKEN, 404: "No such order, or not this token's: whether an order exists is private to its buyer"},
)
ORDER_ACCESS_TOKEN_IN_URL = QueryCredential(
    "orderAccessTokenInUrl",
    "token",
    "The order's access token in the URL (`?token=`, or `?access_token=`): the map page's link and a browser's "
    "EventSource cannot send headers. Never the operator key (403).",
    {401: "No token", 403: "The operator key in the URL", 404: "Not this order's token"},
)
COURIER_TOKEN = BearerCredential(
    "courierToken",
    "A shipment's courier token, issued by an operator (`POST /shipments/{shipment_id}/courier-token` of "
    "tracking): posts that shipment's locations only.",
    {401: _NO_TOKEN, 403: "Not this shipment's courier token", 404: "No such shipment"},
)
OPERATOR_KEY = BearerCredential(
    "operatorKey",
    "The operator key (`TWEETSHOP_OPERATOR_KEY`), as a header only (in a URL it is refused with 403).",
    {401: _NO_TOKEN, 403: "Not the operator key"},
)
CREDENTIALS: tuple[Credential, ...] = (
    MERCHANT_API_KEY,
    ORDER_ACCESS_TOKEN,
    ORDER_ACCESS_TOKEN_IN_URL,
    COURIER_TOKEN,
    OPERATOR_KEY,
)


def operator_dependency(operator_key: SecretStr) -> Callable[..., None]:
    """``auth.operator_only`` as a route dependency that documents the operator key: 401 without, 403 another."""
    check = operator_only(operator_key)

    def operator(request: Request, _: Annotated[str, Depends(OPERATOR_KEY)]) -> None:
        check(request)

    return operator


def _credentials(dependant: Dependant) -> Iterator[Credential]:
    for sub in dependant.dependencies:
        if isinstance(sub.call, Credential):
            yield sub.call
        yield from _credentials(sub)


def _has_body(operation: dict[str, Any]) -> bool:
    return "requestBody" in operation


def document_security(app: FastAPI, document: dict[str, Any]) -> dict[str, Any]:
    """Each operation's ``security`` (``[]`` when it takes none) and the answers its credentials can be refused
    with, from the credential dependencies its route uses (changed in place)."""
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        credentials = list(dict.fromkeys(_credentials(route.dependant)))
        path_item = document.get("paths", {}).get(route.path_format, {})
        for method in route.methods or ():
            operation = path_item.get(method.lower())
            if operation is None:
                continue
            security: list[dict[str, list[str]]] = operation.setdefault("security", [])
            if credentials and any(c.anonymous for c in credentials):
                security.insert(0, {})
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for credential in credentials:
                for status, why in sorted(credential.refusals.items()):
                    responses.setdefault(str(status), {"description": why})
            if _has_body(operation):
                responses.setdefault("413", dict(TOO_LARGE))
    return document


# --- errors ---------------------------------------------------------------------------------------------------


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
                if status[:1] in {"4", "5"} and (not response.get("content") or _is_fastapi_validation_error(response)):
                    response["content"] = _error_content()
            responses.setdefault("default", {"description": "An error", "content": _error_content()})
    schemas = document["components"]["schemas"]
    for ref in _FASTAPI_VALIDATION_REFS:
        schemas.pop(ref.rsplit("/", 1)[1], None)  # no longer referred to
    return document


def install_error_documentation(app: FastAPI) -> None:
    """Serve ``document_errors`` and ``document_security`` of the app's generated document as its
    ``/openapi.json``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(document_security(app, FastAPI.openapi(app)))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
