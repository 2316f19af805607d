"""Alarms: anomaly scores and readings turned into something an operator acts on.

In the style of AWS IoT Device Defender: a rule raises an alarm after ``raise_after``
consecutive bad readings (or bad readings lasting ``raise_after_s``) and clears it after
``clear_after`` consecutive good ones. A rule is either the twin's anomaly verdict
(``kind="anomaly"``) or a plain threshold on one metric (``spo2 < 90``). An alarm is
``active``, then possibly ``acknowledged`` (who, when), then ``cleared``; each change is an
event. Pure state and rules: no I/O here.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Final, Literal

from twinfleet.errors import InvalidRequest, UnknownAlarm

from . import snapshot as snapshots

__all__ = [
    "ALARM_STATES",
    "MAX_ALARM_RULES",
    "MAX_METRIC_NAME",
    "MAX_RULE_NAME",
    "MAX_STREAK",
    "AlarmKind",
    "AlarmRule",
    "AlarmSeverity",
    "AlarmTracker",
    "ThresholdOp",
    "UnknownAlarm",
    "WithAlarms",
    "rules_from_documents",
]

AlarmKind = Literal["anomaly", "threshold"]
AlarmSeverity = Literal["info", "warning", "critical"]
ThresholdOp = Literal["<", "<=", ">", ">="]

ALARM_STATES: Final = ("active", "acknowledged", "cleared")
MAX_ALARM_RULES: Final = 32  # rules of one family
MAX_RULE_NAME: Final = 64  # characters
MAX_METRIC_NAME: Final = 128  # characters
MAX_STREAK: Final = 100_000  # readings ``raise_after`` and ``clear_after`` may count
_OPS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_KEEP_CLEARED: Final = 10
_NO_CHANGE: Final[
    list[dict[str, Any]]
] = []  # shared, never appended to  # cleared alarms a twin remembers, newest last


@dataclass(frozen=True, slots=True)
class AlarmRule:
    """When to raise and clear one alarm."""

    name: str
    kind: AlarmKind = "anomaly"
    metric: str | None = None
    op: ThresholdOp | None = None
    value: float | None = None
    raise_after: int = 3
    raise_after_s: float | None = None
    clear_after: int = 5
    severity: AlarmSeverity = "warning"

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidRequest("an alarm rule needs a name", field="name")
        if len(self.name) > MAX_RULE_NAME:
            raise InvalidRequest(
                f"alarm rule names have at most {MAX_RULE_NAME} characters", field="name"
            )
        if self.metric is not None and len(self.metric) > MAX_METRIC_NAME:
            raise InvalidRequest(
                f"metric names have at most {MAX_METRIC_NAME} characters", field="metric"
            )
        if self.kind == "threshold":
            if self.metric is None or self.op not in _OPS or self.value is None:
                raise InvalidRequest(
                    f"threshold rule {self.name!r} needs metric, op ({', '.join(_OPS)}) and value",
                    field="rule",
                )
        elif self.kind != "anomaly":
            raise InvalidRequest(f"alarm rule kind {self.kind!r} is not anomaly or threshold")
        if not (1 <= self.raise_after <= MAX_STREAK and 1 <= self.clear_after <= MAX_STREAK):
            raise InvalidRequest(f"raise_after and clear_after count readings, 1 to {MAX_STREAK}")
        if self.raise_after_s is not None and not (
            math.isfinite(self.raise_after_s) and self.raise_after_s > 0
        ):
            raise InvalidRequest("raise_after_s is a positive number of seconds", field="rule")
        if self.severity not in ("info", "warning", "critical"):
            raise InvalidRequest(
                f"severity {self.severity!r} is not info, warning or critical", field="rule"
            )

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> AlarmRule:
        """A rule from JSON (the API's), every field checked; ``InvalidPatch`` says what."""
        if not isinstance(doc, Mapping):
            raise InvalidRequest("an alarm rule is a JSON object", field="rules")
        known = {f.name for f in fields(cls)}
        unknown = set(doc) - known
        if unknown:
            raise InvalidRequest(
                f"unknown alarm rule fields: {', '.join(sorted(unknown))}", field="rules"
            )
        kinds: dict[str, tuple[type, ...]] = {
            "name": (str,),
            "kind": (str,),
            "metric": (str, type(None)),
            "op": (str, type(None)),
            "value": (int, float, type(None)),
            "raise_after": (int,),
            "raise_after_s": (int, float, type(None)),
            "clear_after": (int,),
            "severity": (str,),
        }
        for key, value in doc.items():
            if isinstance(value, bool) or not isinstance(value, kinds[key]):
                raise InvalidRequest(f"alarm rule field {key} has the wrong type", field=key)
        rule = cls(**doc)
        if rule.value is not None and not math.isfinite(rule.value):
            raise InvalidRequest("a threshold is a finite number", field="value")
        return rule

    def document(self) -> dict[str, Any]:
        """The rule as JSON, with its human summary."""
        return {**asdict(self), "condition": self.describe()}

    def bad(self, anomalous: bool, values: Mapping[str, float]) -> bool | None:
        """Whether this reading is bad for the rule (None: the reading says nothing of it)."""
        if self.kind == "anomaly":
            return anomalous
        if self.metric is None or self.op is None or self.value is None:
            return None  # checked in __post_init__; here for the type checker
        x = values.get(self.metric)
        return None if x is None else _OPS[self.op](x, self.value)

    def describe(self) -> str:
        """A human summary: ``spo2 < 90 for 2 readings``."""
        what = "anomalous" if self.kind == "anomaly" else f"{self.metric} {self.op} {self.value:g}"
        when = f"{self.raise_after} readings"
        if self.raise_after_s is not None:
            when += f" or {self.raise_after_s:g} s"
        return f"{what} for {when}"


class AlarmTracker:
    """A twin's alarms: per-rule streaks, the open alarm of each rule, recent cleared ones."""

    __slots__ = ("cleared", "open", "streaks")

    def __init__(self) -> None:
        # rule -> [consecutive bad, consecutive good, time the bad streak began (or None)]
        self.streaks: dict[str, list[Any]] = {}
        self.open: dict[str, dict[str, Any]] = {}  # rule -> its active/acknowledged alarm
        self.cleared: list[dict[str, Any]] = []

    def observe(
        self,
        rules: tuple[AlarmRule, ...],
        *,
        anomalous: bool,
        values: Mapping[str, float],
        ts: float,
        twin_id: str,
    ) -> list[dict[str, Any]]:
        """Count one reading against every rule; the alarms raised or cleared by it."""
        changed: list[dict[str, Any]] = _NO_CHANGE  # a new list only when something changes
        streaks = self.streaks
        for rule in rules:
            bad = rule.bad(anomalous, values)
            if bad is None:
                continue
            if not bad and rule.name not in self.open:
                # The common case, kept cheap: nothing open, nothing counting. A good reading
                # only ends a bad streak (good ones are counted while an alarm is open).
                if rule.name in streaks:
                    del streaks[rule.name]
                continue
            streak = streaks.get(rule.name)
            if streak is None:
                streak = streaks[rule.name] = [0, 0, None]
            if bad:
                streak[0] += 1
                streak[1] = 0
                if streak[2] is None:
                    streak[2] = ts
            else:
                streak[0] = 0
                streak[1] += 1
                streak[2] = None
            alarm = self.open.get(rule.name)
            if alarm is None and bad:
                lasted = rule.raise_after_s is not None and ts - streak[2] >= rule.raise_after_s
                if streak[0] >= rule.raise_after or lasted:
                    alarm = self.open[rule.name] = {
                        "id": f"{rule.name}-{int(ts * 1000)}",
                        "twin_id": twin_id,
                        "rule": rule.name,
                        "severity": rule.severity,
                        "condition": rule.describe(),
                        "state": "active",
                        "raised_at": ts,
                        "since": streak[2],
                        "value": values.get(rule.metric) if rule.metric else None,
                        "acknowledged_by": None,
                        "acknowledged_at": None,
                        "cleared_at": None,
                    }
                    changed = [*changed, alarm]
            elif alarm is not None and not bad and streak[1] >= rule.clear_after:
                alarm["state"] = "cleared"
                alarm["cleared_at"] = ts
                del self.open[rule.name]
                del streaks[rule.name]
                self.cleared = [*self.cleared, alarm][-_KEEP_CLEARED:]
                changed = [*changed, alarm]
        return changed

    def retire(self, rules: tuple[AlarmRule, ...], *, now: float) -> list[dict[str, Any]]:
        """Clear the open alarms (and forget the streaks) of rules no longer in ``rules``."""
        names = {rule.name for rule in rules}
        changed = []
        for name in [n for n in self.open if n not in names]:
            alarm = self.open.pop(name)
            alarm["state"] = "cleared"
            alarm["cleared_at"] = now
            alarm["cleared_by"] = "rule removed"
            self.cleared = [*self.cleared, alarm][-_KEEP_CLEARED:]
            changed.append(alarm)
        for name in [n for n in self.streaks if n not in names]:
            del self.streaks[name]
        return changed

    def acknowledge(self, alarm_id: str, *, who: str, now: float) -> tuple[dict[str, Any], bool]:
        """Mark an open alarm acknowledged by ``who``; (the alarm, whether that is news)."""
        for alarm in self.open.values():
            if alarm["id"] == alarm_id:
                if alarm["state"] == "acknowledged":
                    return alarm, False
                alarm["state"] = "acknowledged"
                alarm["acknowledged_by"] = who
                alarm["acknowledged_at"] = now
                return alarm, True
        for alarm in self.cleared:
            if alarm["id"] == alarm_id:
                return alarm, False  # cleared already: nothing left to acknowledge
        raise UnknownAlarm(f"no alarm {alarm_id!r} on twin", field="alarm_id")

    def alarms(self) -> list[dict[str, Any]]:
        """Open alarms, then recently cleared ones (oldest first)."""
        return [*self.open.values(), *self.cleared]

    @staticmethod
    def saved_alarms(state: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
        """What :meth:`alarms` lists, read from a :meth:`state` without rebuilding a tracker."""
        if not state:
            return []
        return [*state.get("open", {}).values(), *state.get("cleared", [])]

    def state(self) -> dict[str, Any]:
        """JSON-ready, for the twin's snapshot."""
        return {"streaks": self.streaks, "open": self.open, "cleared": self.cleared}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> AlarmTracker:
        """Back from :meth:`state`."""
        tracker = cls()
        if state:
            tracker.streaks = {k: list(v) for k, v in state.get("streaks", {}).items()}
            tracker.open = {k: dict(v) for k, v in state.get("open", {}).items()}
            tracker.cleared = [dict(a) for a in state.get("cleared", [])]
        return tracker


@dataclass(frozen=True, slots=True)
class WithAlarms:
    """Selects twins with an alarm in one of ``states`` (a ``TwinSelector``)."""

    states: frozenset[str] = frozenset(("active", "acknowledged"))

    def matches_twin(self, twin: Any) -> bool:
        """Whether the live twin has such an alarm."""
        return any(a["state"] in self.states for a in twin.alarms.alarms())

    def matches_snapshot(self, snap: Mapping[str, Any]) -> bool:
        """Whether the saved twin has such an alarm."""
        alarms = AlarmTracker.saved_alarms(snapshots.alarm_state(snap))
        return any(a["state"] in self.states for a in alarms)


def rules_from_documents(docs: Any) -> tuple[AlarmRule, ...]:
    """A family's rules from JSON (a list of objects): each checked, names unique, at most 32."""
    if not isinstance(docs, Sequence) or isinstance(docs, str):
        raise InvalidRequest("alarm rules are a JSON array of rules", field="rules")
    if len(docs) > MAX_ALARM_RULES:
        raise InvalidRequest(f"a family has at most {MAX_ALARM_RULES} alarm rules", field="rules")
    rules = tuple(AlarmRule.from_document(doc) for doc in docs)
    names = [rule.name for rule in rules]
    if len(set(names)) != len(names):
        raise InvalidRequest("alarm rule names must be unique within a family", field="name")
    return rules
