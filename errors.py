"""Every error twinfleet raises on purpose, in one module at the bottom of the layers.

Each error carries a stable ``code`` (clients match on it; one class per code), a human message
and, where one input is to blame, the ``field`` it came from. The edges map codes to their own
answers, each in one table: HTTP statuses in ``api/errors.py``, CoAP codes in
``adapters/coap.py``, CLI exit codes in the CLI. An error sent as data (over a host's direct
connection) is raised again by its code (:func:`rebuild_error`), never by its class name.

This module imports nothing: every layer may raise these.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ERRORS_BY_CODE",
    "ConnectionLost",
    "DeviceRefused",
    "DocumentTooLarge",
    "Forbidden",
    "HistoryUnavailable",
    "InternalError",
    "InvalidDeviceId",
    "InvalidFilter",
    "InvalidPatch",
    "InvalidRequest",
    "InvalidTimestamp",
    "MalformedPayload",
    "MethodNotAllowed",
    "NestingTooDeep",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionRequired",
    "RateLimited",
    "StoreUnavailable",
    "TrainingNotFound",
    "TwinNotFound",
    "TwinfleetError",
    "Unauthorized",
    "UnknownAlarm",
    "UnknownCommand",
    "UnknownModel",
    "UnknownResource",
    "UnsupportedFormat",
    "UnsupportedMediaType",
    "VersionConflict",
    "rebuild_error",
]

# code -> the one class that has it (filled as the classes below are defined)
ERRORS_BY_CODE: dict[str, type[TwinfleetError]] = {}


class TwinfleetError(Exception):
    """Base of every error twinfleet raises on purpose."""

    code: ClassVar[str] = "twinfleet_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        owner = ERRORS_BY_CODE.get(cls.code)
        if owner is not None and owner.__qualname__ != cls.__qualname__:
            raise TypeError(f"error code {cls.code!r} belongs to {owner.__name__} already")
        ERRORS_BY_CODE[cls.code] = cls

    def to_dict(self) -> dict[str, str | None]:
        """The error as the ``error`` object of the external contract."""
        return {"code": self.code, "message": self.message, "field": self.field}

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross Ray process boundaries; keep the keyword-only field when pickled.
        return (_rebuild, (type(self), self.message, self.field, self._extra()))

    def _extra(self) -> dict[str, object]:
        return {}


ERRORS_BY_CODE[TwinfleetError.code] = TwinfleetError


def _rebuild(
    cls: type[TwinfleetError], message: str, field: str | None, extra: dict[str, object]
) -> TwinfleetError:
    err = cls.__new__(cls)
    TwinfleetError.__init__(err, message, field=field)
    for key, value in extra.items():
        setattr(err, key, value)
    return err


def rebuild_error(
    code: str, message: str, field: str | None, extra: dict[str, object]
) -> TwinfleetError:
    """An error sent as data (its code and state) raised again as the class of that code.

    A code this side does not know (a newer peer's) gives an :class:`InternalError` that
    names it: an answer nobody here can interpret is the platform's fault, not the caller's.
    """
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        return InternalError(f"{message} (error code {code!r} unknown here)", field=field)
    return _rebuild(cls, message, field, extra)


# -- the caller's input -------------------------------------------------------------------------


class InvalidRequest(TwinfleetError):
    """A request that is not what the interface takes: a bad parameter, header or body."""

    code = "invalid_request"


class InvalidPatch(InvalidRequest):
    """A merge patch or a device message body that is not what the contract allows (a bad
    request of its own code: ``except InvalidRequest`` catches it too)."""

    code = "invalid_patch"


class InvalidDeviceId(TwinfleetError):
    """A device id outside ``[A-Za-z0-9._:-]{1,128}``."""

    code = "invalid_device_id"


class InvalidFilter(TwinfleetError):
    """A filter expression that does not parse or breaks a limit; ``position`` is where.

    ``position`` is the 0-based character offset in the filter text; the message names it
    and quotes the line with a caret under it.
    """

    code = "invalid_filter"

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message, field="filter")
        self.position = position

    def _extra(self) -> dict[str, object]:
        return {"position": self.position}


class InvalidTimestamp(TwinfleetError):
    """A timestamp that is neither Unix seconds nor RFC 3339."""

    code = "invalid_timestamp"


class PayloadTooLarge(TwinfleetError):
    """A message payload or request body over its size limit."""

    code = "payload_too_large"


class MalformedPayload(TwinfleetError):
    """A message body that cannot be decoded (bad JSON, CBOR or SenML, wrong shape)."""

    code = "malformed_payload"


class UnsupportedFormat(TwinfleetError):
    """A content format (or topic shape) twinfleet does not read."""

    code = "unsupported_format"


class UnsupportedMediaType(TwinfleetError):
    """An HTTP body of a content type the route does not take."""

    code = "unsupported_media_type"


class DocumentTooLarge(TwinfleetError):
    """A change that would make the twin document bigger than its limit."""

    code = "document_too_large"


class NestingTooDeep(TwinfleetError):
    """A change that nests objects deeper than the limit."""

    code = "nesting_too_deep"


# -- what the caller asked for does not exist or does not match ---------------------------------


class NotFound(TwinfleetError):
    """Something named in the request does not exist (a device entry, a token, a history)."""

    code = "not_found"


class TwinNotFound(TwinfleetError):
    """No twin with this id exists."""

    code = "twin_not_found"

    def __init__(self, twin_id: str) -> None:
        super().__init__(f"twin {twin_id!r} does not exist", field="id")
        self.twin_id = twin_id

    def _extra(self) -> dict[str, object]:
        return {"twin_id": self.twin_id}


class UnknownCommand(TwinfleetError):
    """No command with this id exists for the twin."""

    code = "command_not_found"


class UnknownAlarm(TwinfleetError):
    """No alarm with this id on this twin."""

    code = "alarm_not_found"


class UnknownModel(TwinfleetError):
    """An anomaly model name that no registry knows."""

    code = "unknown_model"


class TrainingNotFound(TwinfleetError):
    """No training job with this id."""

    code = "training_not_found"


class HistoryUnavailable(TwinfleetError):
    """This platform keeps no telemetry history it can answer from (or writes it elsewhere)."""

    code = "history_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="telemetry")


class Conflict(TwinfleetError):
    """The request conflicts with what exists (a device registered already)."""

    code = "conflict"


class VersionConflict(TwinfleetError):
    """A write carried an expected version that is not the twin's current one."""

    code = "version_conflict"

    def __init__(self, twin_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"twin {twin_id!r} is at version {actual}, not the expected {expected}",
            field="version",
        )
        self.twin_id = twin_id
        self.expected = expected
        self.actual = actual

    def _extra(self) -> dict[str, object]:
        return {"twin_id": self.twin_id, "expected": self.expected, "actual": self.actual}


class PreconditionRequired(TwinfleetError):
    """This platform requires a write to carry the version it expects (``If-Match``)."""

    code = "precondition_required"


class DeviceRefused(TwinfleetError):
    """A suspended or decommissioned device's message."""

    code = "device_refused"


# -- who is calling ---------------------------------------------------------------------------


class Unauthorized(TwinfleetError):
    """No valid credentials (a bearer token)."""

    code = "unauthorized"


class Forbidden(TwinfleetError):
    """The caller's role lacks the permission."""

    code = "forbidden"


class RateLimited(TwinfleetError):
    """Too many requests for this token; ``retry_after`` says how many seconds to wait."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, field="authorization")
        self.retry_after = retry_after

    def _extra(self) -> dict[str, object]:
        return {"retry_after": self.retry_after}


# -- protocol edges -----------------------------------------------------------------------------


class UnknownResource(TwinfleetError):
    """A CoAP path the endpoint does not serve."""

    code = "unknown_resource"


class MethodNotAllowed(TwinfleetError):
    """A served path asked with a method it does not take."""

    code = "method_not_allowed"


class NotAcceptable(TwinfleetError):
    """A GET asking (Accept) for a format the endpoint does not answer in."""

    code = "not_acceptable"


# -- the platform itself ------------------------------------------------------------------------


class StoreUnavailable(TwinfleetError):
    """The state store could not commit a change; nothing was acknowledged."""

    code = "store_unavailable"


class InternalError(TwinfleetError):
    """A failure that is the platform's, not the caller's (a bug in a host): HTTP 500."""

    code = "internal_error"


class ConnectionLost(Exception):
    """The connection to a host closed before its answer came (the host may have restarted).

    Not a ``TwinfleetError``: callers retry it (where a retry is safe) or report it as the
    host being unavailable.
    """
