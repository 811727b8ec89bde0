"""Errors a use case raises for the HTTP layer to turn into a clear 4xx JSON answer."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A request that cannot be done as asked; ``status`` is the HTTP status to answer with."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class Unprocessable(DomainError):
    status = 422
    code = "unprocessable"


class TooManyRequests(DomainError):
    """A limit was reached; ``retry_after_s`` becomes the answer's Retry-After header (whole seconds, at least 1)."""

    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: float, code: str | None = None, **details: Any) -> None:
        super().__init__(message, code=code, **details)
        self.retry_after_s = retry_after_s
