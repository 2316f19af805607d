"""Twins as pure state and rules: the document, merge semantics, limits and device families.

Nothing here imports Ray, FastAPI or a network library.
"""

from __future__ import annotations

from .errors import (
    DocumentTooLarge,
    InvalidDeviceId,
    InvalidPatch,
    InvalidTimestamp,
    NestingTooDeep,
    PayloadTooLarge,
    StoreUnavailable,
    TwinfleetError,
    TwinNotFound,
    UnknownModel,
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
    "GENERIC",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_PAYLOAD_BYTES",
    "DeviceFamily",
    "DocumentTooLarge",
    "InvalidDeviceId",
    "InvalidPatch",
    "InvalidTimestamp",
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
    "UnknownModel",
    "VersionConflict",
    "check_depth",
    "delta",
    "family_for",
    "merge_patch",
    "merge_timestamped",
    "parse_timestamp",
    "validate_device_id",
]
