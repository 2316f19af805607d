"""Twins as pure state and rules: the document, merge semantics, limits and device families.

Nothing here imports Ray, FastAPI or a network library.
"""

from __future__ import annotations

from twinfleet.errors import (
    DeviceRefused,
    DocumentTooLarge,
    InvalidDeviceId,
    InvalidFilter,
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

from .alarms import ALARM_STATES, AlarmRule, AlarmTracker, UnknownAlarm, WithAlarms
from .commands import FINAL_STATUSES, CommandRequest, CommandStatus
from .families import FAMILIES, GENERIC, DeviceFamily, Metric, family_for, family_named
from .filters import (
    MAX_FILTER_DEPTH,
    MAX_FILTER_LENGTH,
    MAX_FILTER_LIST,
    Comparison,
    Conjunction,
    Disjunction,
    Existence,
    Expression,
    FieldPath,
    Filter,
    Membership,
    Negation,
    Scalar,
    parse_filter,
)
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
from .twin import LIFECYCLE_STATES, MessageKind, ModelSlot, Twin
from .windows import WINDOWS, window_stats

__all__ = [
    "ALARM_STATES",
    "FAMILIES",
    "FINAL_STATUSES",
    "GENERIC",
    "LIFECYCLE_STATES",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LENGTH",
    "MAX_FILTER_LIST",
    "MAX_PAYLOAD_BYTES",
    "WINDOWS",
    "AlarmRule",
    "AlarmTracker",
    "CommandRequest",
    "CommandStatus",
    "Comparison",
    "Conjunction",
    "DeviceFamily",
    "DeviceRefused",
    "Disjunction",
    "DocumentTooLarge",
    "Existence",
    "Expression",
    "FieldPath",
    "Filter",
    "InvalidDeviceId",
    "InvalidFilter",
    "InvalidPatch",
    "InvalidTimestamp",
    "MalformedPayload",
    "Membership",
    "MessageKind",
    "Metric",
    "ModelSlot",
    "Negation",
    "NestingTooDeep",
    "PayloadTooLarge",
    "Scalar",
    "StoreUnavailable",
    "Twin",
    "TwinFilter",
    "TwinNotFound",
    "TwinfleetError",
    "UnknownAlarm",
    "UnknownCommand",
    "UnknownModel",
    "UnsupportedFormat",
    "VersionConflict",
    "WithAlarms",
    "check_depth",
    "delta",
    "family_for",
    "family_named",
    "merge_patch",
    "merge_timestamped",
    "parse_filter",
    "parse_timestamp",
    "validate_device_id",
    "window_stats",
]
