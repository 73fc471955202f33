"""Domain errors that map onto gRPC status codes at the transport edge.

Plain logic raises these; the gRPC layer turns them into statuses, so that the logic stays testable
without a network and no path answers INTERNAL/UNKNOWN for a client mistake.
"""

from __future__ import annotations

import grpc


class VienError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(VienError):
    """A request field is invalid. The message starts with the field name and states the limit."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class Unauthenticated(VienError):
    """No API key, or not a known one. The message never contains the key that was sent."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(VienError):
    """An authenticated caller asked for something outside its tenant; the message names the field."""

    code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(VienError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(VienError):
    """Overload: the caller should retry after `retry_after_ms`."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_ms: int = 100) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Unavailable(VienError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(VienError):
    """The caller's deadline passed before the work was done; the work was dropped, not computed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class FailedPrecondition(VienError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class UpstreamError(VienError):
    """A downstream service answered with an error status; it is passed on with the same code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


# Statuses that describe the downstream service rather than the request: their message names that service.
_SERVICE_FAULTS = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                   grpc.StatusCode.DEADLINE_EXCEEDED)
#: What a caller may retry later (nothing about the request itself was refused).
TRANSIENT_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)


def upstream_error(exc: grpc.RpcError, who: str) -> UpstreamError:
    """A failed call to `who` (e.g. "doc-embedder at host:port") as the error passed on: the same status code;
    a service fault says which service, a refusal of the request keeps the downstream's own words."""
    code = exc.code()
    details = exc.details() or ""
    return UpstreamError(code, f"{who}: {details}" if code in _SERVICE_FAULTS else details)
