"""API errors: one hierarchy, mapped to HTTP status and to `kind: Status` in one place.

The server raises these and renders them with `to_status()`; clients parse a Status
body back into the same classes with `from_status()`, so `except NotFound` reads the
same on both sides of the wire.
"""
from __future__ import annotations

from typing import Any


class APIError(Exception):
    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, kind: str = "", name: str = "", group: str = "",
                 causes: list[dict[str, Any]] | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name
        self.group = group
        self.causes = causes or []
        self.retry_after = retry_after

    def to_status(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = self.causes
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        status: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason,
            "code": self.code,
        }
        if details:
            status["details"] = details
        return status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class BadRequest(APIError):
    code, reason = 400, "BadRequest"


class Unauthorized(APIError):
    code, reason = 401, "Unauthorized"


class Forbidden(APIError):
    code, reason = 403, "Forbidden"


class NotFound(APIError):
    code, reason = 404, "NotFound"


class MethodNotAllowed(APIError):
    code, reason = 405, "MethodNotAllowed"


class NotAcceptable(APIError):
    code, reason = 406, "NotAcceptable"


class AlreadyExists(APIError):
    code, reason = 409, "AlreadyExists"


class Conflict(APIError):
    code, reason = 409, "Conflict"


class Gone(APIError):
    code, reason = 410, "Expired"


class TooLarge(APIError):
    code, reason = 413, "RequestEntityTooLarge"


class UnsupportedMediaType(APIError):
    code, reason = 415, "UnsupportedMediaType"


class Invalid(APIError):
    code, reason = 422, "Invalid"


class TooManyRequests(APIError):
    code, reason = 429, "TooManyRequests"


class InternalError(APIError):
    code, reason = 500, "InternalError"


class ServerTimeout(APIError):
    code, reason = 504, "Timeout"


class InsufficientStorage(APIError):
    """The store refuses writes for lack of space (etcd's quota). Kubernetes answers a
    500 here; we answer 507 so that clients and people can tell it from a bug."""
    code, reason = 507, "InsufficientStorage"


_BY_REASON = {cls.reason: cls for cls in (
    BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, NotAcceptable,
    AlreadyExists, Conflict, Gone, TooLarge, UnsupportedMediaType, Invalid,
    TooManyRequests, InternalError, ServerTimeout, InsufficientStorage)}
_BY_CODE = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
            405: MethodNotAllowed, 406: NotAcceptable, 409: Conflict, 410: Gone,
            413: TooLarge, 415: UnsupportedMediaType, 422: Invalid, 429: TooManyRequests,
            504: ServerTimeout, 507: InsufficientStorage}
_BY_REASON["Gone"] = Gone
_BY_REASON["Timeout"] = ServerTimeout
_BY_REASON["ServerTimeout"] = ServerTimeout


def from_status(status: dict[str, Any], code: int | None = None) -> APIError:
    """Turn a Status body (and the HTTP code) back into the matching APIError."""
    reason = status.get("reason", "")
    code = code or status.get("code") or 500
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code) or APIError
    details = status.get("details") or {}
    err = cls(status.get("message", reason or f"HTTP {code}"), kind=details.get("kind", ""),
              name=details.get("name", ""), group=details.get("group", ""),
              causes=details.get("causes"), retry_after=details.get("retryAfterSeconds"))
    err.code = code
    return err


def not_found(resource: str, name: str, group: str = "") -> NotFound:
    qualified = f"{resource}.{group}" if group else resource
    return NotFound(f'{qualified} "{name}" not found', kind=resource, name=name, group=group)


def already_exists(resource: str, name: str, group: str = "") -> AlreadyExists:
    qualified = f"{resource}.{group}" if group else resource
    return AlreadyExists(f'{qualified} "{name}" already exists', kind=resource, name=name,
                         group=group)


def conflict(resource: str, name: str, group: str = "", why: str = "") -> Conflict:
    qualified = f"{resource}.{group}" if group else resource
    why = why or ("the object has been modified; please apply your changes to the "
                  "latest version and try again")
    return Conflict(f'Operation cannot be fulfilled on {qualified} "{name}": {why}',
                    kind=resource, name=name, group=group)


def invalid(kind: str, name: str, causes: list[dict[str, Any]], group: str = "") -> Invalid:
    """causes: [{"reason": "FieldValueInvalid", "message": ..., "field": "spec.x"}]"""
    qualified = f"{kind}.{group}" if group else kind
    summary = ", ".join(f'{c["field"]}: {c["message"]}' if c.get("field") else c["message"]
                        for c in causes)
    return Invalid(f'{qualified} "{name}" is invalid: {summary}', kind=kind, name=name,
                   group=group, causes=causes)
