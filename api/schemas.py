"""The API's request bodies (pydantic), described from the twins' own rules.

Where a body stands for a domain value (an alarm rule, a command, a device id), its choices,
bounds and defaults are that value's, imported from ``twins/``, never restated here; the
OpenAPI document (``/openapi.json``) shows them. A body outside them is a 422 before any route
runs. A family's alarm rules are then checked by the domain itself
(:func:`~twinfleet.twins.alarms.rules_from_documents`), so a rule the runtime would refuse is
refused here with the runtime's own error (a threshold with no ``op``, say: a 400).

The remaining bounds (a model or family name's length, a token's name) guard request sizes
only; no rule of the domain says more about them.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from twinfleet.twins.alarms import (
    MAX_ALARM_RULES,
    MAX_METRIC_NAME,
    MAX_RULE_NAME,
    MAX_STREAK,
    AlarmKind,
    AlarmRule,
    AlarmSeverity,
    ThresholdOp,
    rules_from_documents,
)
from twinfleet.twins.commands import MAX_COMMAND_NAME, TIMEOUT_S_RANGE, TTL_S_RANGE, CommandRequest
from twinfleet.twins.limits import DEVICE_ID_PATTERN, MAX_DEVICE_ID_LENGTH

__all__ = [
    "AlarmRuleIn",
    "AlarmRulesIn",
    "CommandIn",
    "DeviceIn",
    "ModelIn",
    "TokenIn",
    "TrainingIn",
]

_NAME_LENGTH = 64  # a device type or family name
_MODEL_NAME_LENGTH = 100


def _defaults(value_type: Any) -> dict[str, Any]:
    """The defaults of a domain dataclass's fields, by name (fields without one are left out)."""
    return {
        field.name: field.default
        for field in dataclasses.fields(value_type)
        if field.default is not dataclasses.MISSING
    }


_RULE = _defaults(AlarmRule)
_COMMAND = _defaults(CommandRequest)


class CommandIn(BaseModel):
    """A command for a device (a ``twins.commands.CommandRequest``)."""

    name: str = Field(
        min_length=1,
        max_length=MAX_COMMAND_NAME,
        description="letters, digits and . _ - (checked by the device's twin)",
    )
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(
        default=_COMMAND["timeout_s"],
        ge=TIMEOUT_S_RANGE[0],
        le=TIMEOUT_S_RANGE[1],
        description="how long to wait for the device's answer (0: answer 202 at once)",
    )
    ttl_s: float = Field(
        default=_COMMAND["ttl_s"],
        ge=TTL_S_RANGE[0],
        le=TTL_S_RANGE[1],
        description="how long the command waits for its device before it expires",
    )


class DeviceIn(BaseModel):
    """A device to register."""

    id: str = Field(pattern=f"^{DEVICE_ID_PATTERN}$")
    type: str | None = Field(default=None, max_length=_NAME_LENGTH)
    tags: dict[str, Any] = Field(default_factory=dict)


class ModelIn(BaseModel):
    """A model to assign, by name, with its parameters."""

    model: str = Field(min_length=1, max_length=_MODEL_NAME_LENGTH)
    params: dict[str, Any] = Field(default_factory=dict)


class AlarmRuleIn(BaseModel):
    """One alarm rule: the anomaly verdict or a threshold, raise and clear conditions."""

    name: str = Field(min_length=1, max_length=MAX_RULE_NAME)
    kind: AlarmKind = _RULE["kind"]
    metric: str | None = Field(default=_RULE["metric"], max_length=MAX_METRIC_NAME)
    op: ThresholdOp | None = _RULE["op"]
    value: float | None = _RULE["value"]
    raise_after: int = Field(default=_RULE["raise_after"], ge=1, le=MAX_STREAK)
    raise_after_s: float | None = Field(default=_RULE["raise_after_s"], gt=0)
    clear_after: int = Field(default=_RULE["clear_after"], ge=1, le=MAX_STREAK)
    severity: AlarmSeverity = _RULE["severity"]


class AlarmRulesIn(BaseModel):
    """A family's alarm rules (they replace the ones it has)."""

    rules: list[AlarmRuleIn] = Field(max_length=MAX_ALARM_RULES)

    @model_validator(mode="after")
    def _are_a_family_s_rules(self) -> AlarmRulesIn:
        # The domain's own checks (a threshold needs metric, op and value; names unique), so
        # the API refuses what the runtime would, with the same error. It raises
        # ``InvalidRequest``, which is not a ``ValueError``: pydantic lets it through to the
        # API's error handler (a 400, as from the runtime), not into a 422.
        rules_from_documents(self.documents())
        return self

    def documents(self) -> list[dict[str, Any]]:
        """The rules as JSON objects, every field given."""
        return [rule.model_dump() for rule in self.rules]


class TrainingIn(BaseModel):
    """A training job: a model fitted on a family's (or some twins') telemetry history."""

    family: str | None = Field(default=None, max_length=_NAME_LENGTH)
    twins: list[Annotated[str, Field(max_length=MAX_DEVICE_ID_LENGTH)]] = Field(
        default_factory=list, max_length=10_000
    )
    model: str | None = Field(default=None, min_length=1, max_length=_MODEL_NAME_LENGTH)
    params: dict[str, Any] | None = None
    scope: Literal["family", "twin"] = "family"
    since: float | None = Field(default=None, description="Unix seconds; default: hours ago")
    until: float | None = None
    hours: float = Field(default=24.0, gt=0, le=24 * 366, description="history used if no since")
    max_twins: int = Field(default=1_000, ge=1, le=100_000)


class TokenIn(BaseModel):
    """A token to create."""

    role: str
    name: str = Field(default="", max_length=100)
