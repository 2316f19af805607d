"""Twins as pure state and rules: the document, merge semantics, limits and device families.

Nothing here imports Ray, FastAPI or a network library.
"""

from __future__ import annotations

from .commands import FINAL_STATUSES, CommandRequest, CommandStatus
from .errors import (
    DocumentTooLarge,
    InvalidDeviceId,
    InvalidPatch,
    InvalidTimestamp,
    MalformedPayload,
    NestingTooDeep,
    PayloadTooLarge,
    StoreUnavailable,
    TwinfleetError,
    TwinNotFound,
    UnknownCommand,
    UnknownModel,
    UnsupportedFormat,
    VersionConflict,
)
from .families import FAMILIES, GENERIC, DeviceFamily, Metric, family_for
from .limits import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_PAYLOAD_BYTES,
    check_depth,
    parse_timestamp,
    validate_device_id,
)
from .merge import delta, merge_patch, merge_timestamped
from .query import TwinFilter
from .twin import MessageKind, ModelSlot, Twin

__all__ = [
    "FAMILIES",
    "FINAL_STATUSES",
    "GENERIC",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_PAYLOAD_BYTES",
    "CommandRequest",
    "CommandStatus",
    "DeviceFamily",
    "DocumentTooLarge",
    "InvalidDeviceId",
    "InvalidPatch",
    "InvalidTimestamp",
    "MalformedPayload",
    "MessageKind",
    "Metric",
    "ModelSlot",
    "NestingTooDeep",
    "PayloadTooLarge",
    "StoreUnavailable",
    "Twin",
    "TwinFilter",
    "TwinNotFound",
    "TwinfleetError",
    "UnknownCommand",
    "UnknownModel",
    "UnsupportedFormat",
    "VersionConflict",
    "check_depth",
    "delta",
    "family_for",
    "merge_patch",
    "merge_timestamped",
    "parse_timestamp",
    "validate_device_id",
]
