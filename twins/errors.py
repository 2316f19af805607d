"""Typed errors of the twin domain.

Each error carries a stable ``code`` (clients match on it), a human message and, where one
input is to blame, the ``field`` it came from. The edges (HTTP, CoAP, MQTT) map these to their
own answers, each in one place.
"""

from __future__ import annotations

__all__ = [
    "DeviceRefused",
    "DocumentTooLarge",
    "InvalidDeviceId",
    "InvalidFilter",
    "InvalidPatch",
    "InvalidTimestamp",
    "MalformedPayload",
    "NestingTooDeep",
    "PayloadTooLarge",
    "StoreUnavailable",
    "TwinNotFound",
    "TwinfleetError",
    "UnknownCommand",
    "UnknownModel",
    "UnsupportedFormat",
    "VersionConflict",
    "rebuild_error",
]


class TwinfleetError(Exception):
    """Base of every error twinfleet raises on purpose."""

    code = "twinfleet_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str | None]:
        """The error as the ``error`` object of the external contract."""
        return {"code": self.code, "message": self.message, "field": self.field}

    def __reduce__(self) -> tuple[object, ...]:
        # Errors cross Ray process boundaries; keep the keyword-only field when pickled.
        return (_rebuild, (type(self), self.message, self.field, self._extra()))

    def _extra(self) -> dict[str, object]:
        return {}


def _rebuild(
    cls: type[TwinfleetError], message: str, field: str | None, extra: dict[str, object]
) -> TwinfleetError:
    err = cls.__new__(cls)
    TwinfleetError.__init__(err, message, field=field)
    for key, value in extra.items():
        setattr(err, key, value)
    return err


def _subclasses(cls: type[TwinfleetError]) -> dict[str, type[TwinfleetError]]:
    found = {cls.__name__: cls}
    for sub in cls.__subclasses__():
        found.update(_subclasses(sub))
    return found


def rebuild_error(
    type_name: str, message: str, field: str | None, extra: dict[str, object]
) -> TwinfleetError:
    """An error sent as data (its class name and state) raised again as that class.

    An unknown name (a class the receiver does not have) gives a plain ``TwinfleetError``.
    """
    cls = _subclasses(TwinfleetError).get(type_name, TwinfleetError)
    return _rebuild(cls, message, field, extra)


class TwinNotFound(TwinfleetError):
    """No twin with this id exists."""

    code = "twin_not_found"

    def __init__(self, twin_id: str) -> None:
        super().__init__(f"twin {twin_id!r} does not exist", field="id")
        self.twin_id = twin_id

    def _extra(self) -> dict[str, object]:
        return {"twin_id": self.twin_id}


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


class InvalidDeviceId(TwinfleetError):
    """A device id outside ``[A-Za-z0-9._:-]{1,128}``."""

    code = "invalid_device_id"


class InvalidPatch(TwinfleetError):
    """A patch or message body that is not what the contract allows."""

    code = "invalid_patch"


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
    """A message payload over the size limit."""

    code = "payload_too_large"


class MalformedPayload(TwinfleetError):
    """A message body that cannot be decoded (bad JSON, CBOR or SenML, wrong shape)."""

    code = "malformed_payload"


class UnsupportedFormat(TwinfleetError):
    """A content format (or topic shape) twinfleet does not read."""

    code = "unsupported_format"


class UnknownCommand(TwinfleetError):
    """No command with this id exists for the twin."""

    code = "command_not_found"


class DeviceRefused(TwinfleetError):
    """A suspended or decommissioned device's message."""

    code = "device_refused"


class DocumentTooLarge(TwinfleetError):
    """A change that would make the twin document bigger than its limit."""

    code = "document_too_large"


class NestingTooDeep(TwinfleetError):
    """A change that nests objects deeper than the limit."""

    code = "nesting_too_deep"


class UnknownModel(TwinfleetError):
    """An anomaly model name that no registry knows."""

    code = "unknown_model"


class StoreUnavailable(TwinfleetError):
    """The state store could not commit a change; nothing was acknowledged."""

    code = "store_unavailable"
