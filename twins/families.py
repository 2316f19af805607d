"""Device families, declared as data.

A family says what a device of that kind measures (fields and units), how often it is
expected to report (which drives presence), and which anomaly model its twins get by default.
There is one description per family, not one class; unknown types fall back to ``generic``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from twinfleet.errors import InvalidRequest

from .alarms import AlarmRule

__all__ = [
    "ANOMALY_RULE",
    "FAMILIES",
    "GENERIC",
    "DeviceFamily",
    "Metric",
    "family_for",
    "family_named",
]

ANOMALY_RULE = AlarmRule("anomaly", raise_after=3, clear_after=5)
"""Every family's default: three anomalous readings in a row raise, five normal ones clear."""

MetricKind = Literal["gauge", "counter", "state"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One measurement a family reports: its name, unit, kind and normal operating range."""

    name: str
    unit: str
    kind: MetricKind = "gauge"
    low: float | None = None
    high: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a metric needs a name")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"metric {self.name}: low {self.low} is above high {self.high}")


@dataclass(frozen=True, slots=True)
class DeviceFamily:
    """What twinfleet knows about a kind of device."""

    name: str
    title: str
    metrics: tuple[Metric, ...]
    report_interval_s: float
    classification: str
    default_model: str = "ewma"
    alarm_rules: tuple[AlarmRule, ...] = (ANOMALY_RULE,)
    presence_tolerance: float = 3.0
    subtypes: tuple[str, ...] = ()
    metric_names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.report_interval_s <= 0:
            raise ValueError(f"family {self.name}: report_interval_s must be positive")
        if self.presence_tolerance < 1:
            raise ValueError(f"family {self.name}: presence_tolerance must be at least 1")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"family {self.name}: metric names repeat")
        object.__setattr__(self, "metric_names", frozenset(names))

    @property
    def offline_after_s(self) -> float:
        """Silence after which a device of this family counts as offline."""
        return self.report_interval_s * self.presence_tolerance

    def metric(self, name: str) -> Metric | None:
        """The metric called ``name``, if this family declares one."""
        for metric in self.metrics:
            if metric.name == name:
                return metric
        return None


GENERIC = DeviceFamily(
    name="generic",
    title="Generic device",
    metrics=(),
    report_interval_s=60.0,
    classification="generic",
)

_DECLARED = (
    DeviceFamily(
        name="smart-sensor",
        title="Smart sensor",
        classification="environment",
        subtypes=("temperature", "humidity", "pressure", "motion"),
        report_interval_s=10.0,
        metrics=(
            Metric("temperature", "Cel", low=-40.0, high=85.0),
            Metric("humidity", "%RH", low=0.0, high=100.0),
            Metric("pressure", "hPa", low=870.0, high=1085.0),
            Metric("motion", "count", kind="counter", low=0.0),
            Metric("battery", "%", low=0.0, high=100.0),
        ),
    ),
    DeviceFamily(
        name="industrial-controller",
        title="Industrial controller (PLC, SCADA RTU, motor controller)",
        classification="industrial",
        subtypes=("plc", "scada", "motor-controller"),
        report_interval_s=1.0,
        metrics=(
            Metric("motor_rpm", "1/min", low=0.0, high=6000.0),
            Metric("motor_current", "A", low=0.0, high=400.0),
            Metric("vibration", "mm/s", low=0.0, high=50.0),
            Metric("temperature", "Cel", low=-20.0, high=150.0),
            Metric("cycle_count", "count", kind="counter", low=0.0),
            Metric("run_state", "", kind="state", description="idle, running, fault"),
        ),
    ),
    DeviceFamily(
        name="smart-meter",
        title="Smart meter (electricity, water, gas)",
        classification="utility",
        subtypes=("electricity", "water", "gas"),
        report_interval_s=60.0,
        metrics=(
            Metric("power", "kW", low=0.0, high=100.0),
            Metric("energy", "kWh", kind="counter", low=0.0),
            Metric("voltage", "V", low=180.0, high=260.0),
            Metric("flow", "m3/h", low=0.0, high=50.0),
            Metric("volume", "m3", kind="counter", low=0.0),
        ),
    ),
    DeviceFamily(
        name="patient-monitor",
        title="Patient monitor",
        classification="healthcare",
        report_interval_s=5.0,
        presence_tolerance=2.0,
        alarm_rules=(
            ANOMALY_RULE,
            AlarmRule(
                "spo2-low",
                kind="threshold",
                metric="spo2",
                op="<",
                value=90.0,
                raise_after=2,
                clear_after=3,
                severity="critical",
            ),
        ),
        metrics=(
            Metric("heart_rate", "beat/min", low=30.0, high=220.0),
            Metric("spo2", "%", low=70.0, high=100.0),
            Metric("resp_rate", "breath/min", low=4.0, high=60.0),
            Metric("systolic", "mmHg", low=60.0, high=250.0),
            Metric("diastolic", "mmHg", low=30.0, high=150.0),
            Metric("body_temperature", "Cel", low=32.0, high=43.0),
        ),
    ),
    DeviceFamily(
        name="vehicle-tracker",
        title="Vehicle telematics (GPS tracker)",
        classification="mobility",
        report_interval_s=15.0,
        metrics=(
            Metric("lat", "lat", low=-90.0, high=90.0),
            Metric("lon", "lon", low=-180.0, high=180.0),
            Metric("speed", "km/h", low=0.0, high=250.0),
            Metric("heading", "deg", low=0.0, high=360.0),
            Metric("fuel", "%", low=0.0, high=100.0),
            Metric("engine_temperature", "Cel", low=-30.0, high=130.0),
        ),
    ),
)

FAMILIES: Mapping[str, DeviceFamily] = MappingProxyType(
    {family.name: family for family in (*_DECLARED, GENERIC)}
)


def family_for(device_type: str | None) -> DeviceFamily:
    """The family of ``device_type``; ``smart-meter.water`` names a subtype; unknown is generic."""
    if not device_type:
        return GENERIC
    family = FAMILIES.get(device_type)
    if family is None:
        family = FAMILIES.get(device_type.split(".", 1)[0], GENERIC)
    return family


def family_named(name: str) -> DeviceFamily:
    """The family called exactly ``name`` (assignments, rules, training name one), or
    ``InvalidPatch`` listing the known ones."""
    family = FAMILIES.get(name)
    if family is None:
        known = ", ".join(sorted(FAMILIES))
        raise InvalidRequest(f"no device family {name!r} (known: {known})", field="family")
    return family
