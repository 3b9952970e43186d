"""The gateway's errors and the one JSON shape every error answer has.

``{"error": {"type": "...", "message": "..."}}`` -- with pydantic's ``detail`` list added
for invalid input (422) -- and the status code each error class stands for.
"""

from __future__ import annotations

from typing import Any

from redundancy.errors import InvalidInputError, RedundancyError


class ApiError(RedundancyError):
    """An error answered with ``status`` (and ``headers``) instead of a 500."""

    status = 500

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or {}


class UnauthorizedError(ApiError):
    status = 401


class NotFoundError(ApiError):
    status = 404


class ConflictError(ApiError):
    status = 409


class PayloadTooLargeError(ApiError):
    status = 413


class UnsupportedMediaTypeError(ApiError):
    status = 415


class RateLimitedError(ApiError):
    status = 429


class ServiceUnavailableError(ApiError):
    status = 503


def status_of(exc: Exception) -> int:
    """The HTTP status for one of our errors: invalid input is the caller's (422), an
    unreachable service is ours for now (503), anything else a bug (500)."""
    from redundancy.errors import InfrastructureError
    from redundancy.sessions import SessionRefusedError

    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, SessionRefusedError):
        return 401
    if isinstance(exc, InvalidInputError):
        return 422
    if isinstance(exc, InfrastructureError):
        return 503
    return 500


def body(exc: Exception, detail: list[Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"error": {"type": type(exc).__name__, "message": str(exc)}}
    if detail is not None:
        out["detail"] = detail
    return out


def readable(errors: list[Any]) -> str:
    """pydantic's error list as one line: ``items.3.text: Input should be ...; ...``."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


__all__ = [
    "ApiError",
    "ConflictError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ServiceUnavailableError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "body",
    "readable",
    "status_of",
]
