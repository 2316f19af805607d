"""Device families, declared as data, and their lookup by device type."""

from __future__ import annotations

import dataclasses

import pytest

from twinfleet.twins import FAMILIES, GENERIC, DeviceFamily, Metric, family_for

DECLARED = [
    "smart-sensor",
    "industrial-controller",
    "smart-meter",
    "patient-monitor",
    "vehicle-tracker",
]


def test_five_declared_families_and_generic() -> None:
    assert sorted(FAMILIES) == sorted([*DECLARED, "generic"])
    assert FAMILIES["generic"] is GENERIC


@pytest.mark.parametrize("name", DECLARED)
def test_declared_family_is_complete(name: str) -> None:
    family = FAMILIES[name]
    assert family.name == name
    assert family.title
    assert family.classification
    assert family.metrics
    assert family.report_interval_s > 0
    assert family.default_model == "ewma"
    assert family.metric_names == {m.name for m in family.metrics}


def test_family_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        FAMILIES["new"] = GENERIC  # type: ignore[index]


@pytest.mark.parametrize(
    ("device_type", "family"),
    [
        ("smart-meter", "smart-meter"),
        ("smart-meter.water", "smart-meter"),
        ("smart-meter.gas", "smart-meter"),
        ("smart-sensor.temperature", "smart-sensor"),
        ("industrial-controller.plc", "industrial-controller"),
        ("patient-monitor", "patient-monitor"),
        ("vehicle-tracker", "vehicle-tracker"),
        ("generic", "generic"),
        ("toaster", "generic"),
        ("toaster.smart", "generic"),
        ("", "generic"),
        (None, "generic"),
    ],
)
def test_family_for_finds_family_subtype_or_generic(device_type: str | None, family: str) -> None:
    assert family_for(device_type) is FAMILIES[family]


def test_subtypes_are_declared() -> None:
    assert FAMILIES["smart-meter"].subtypes == ("electricity", "water", "gas")
    assert "motor-controller" in FAMILIES["industrial-controller"].subtypes


def test_offline_after_is_interval_times_tolerance() -> None:
    assert FAMILIES["smart-sensor"].offline_after_s == 30.0
    assert FAMILIES["patient-monitor"].offline_after_s == 10.0
    assert GENERIC.offline_after_s == 180.0


def test_metric_lookup() -> None:
    meter = FAMILIES["smart-meter"]
    metric = meter.metric("energy")
    assert metric is not None
    assert (metric.unit, metric.kind, metric.low) == ("kWh", "counter", 0.0)
    assert meter.metric("heart_rate") is None


def test_metric_ranges_are_ordered() -> None:
    for family in FAMILIES.values():
        for metric in family.metrics:
            if metric.low is not None and metric.high is not None:
                assert metric.low <= metric.high, (family.name, metric.name)


def test_metric_needs_a_name() -> None:
    with pytest.raises(ValueError, match="a metric needs a name"):
        Metric("", "Cel")


def test_metric_low_above_high_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"metric t: low 10\.0 is above high 5\.0"):
        Metric("t", "Cel", low=10.0, high=5.0)


def test_metric_with_one_bound_is_fine() -> None:
    assert Metric("count", "count", kind="counter", low=0.0).high is None


def family(**overrides: object) -> DeviceFamily:
    fields: dict[str, object] = {
        "name": "pump",
        "title": "Pump",
        "metrics": (Metric("rpm", "1/min"),),
        "report_interval_s": 5.0,
        "classification": "industrial",
    }
    fields.update(overrides)
    return DeviceFamily(**fields)  # type: ignore[arg-type]


def test_device_family_defaults() -> None:
    pump = family()
    assert pump.default_model == "ewma"
    assert pump.presence_tolerance == 3.0
    assert pump.metric_names == frozenset({"rpm"})


@pytest.mark.parametrize("interval", [0.0, -1.0])
def test_device_family_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match="family pump: report_interval_s must be positive"):
        family(report_interval_s=interval)


def test_device_family_tolerance_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="family pump: presence_tolerance must be at least 1"):
        family(presence_tolerance=0.5)


def test_device_family_metric_names_must_not_repeat() -> None:
    with pytest.raises(ValueError, match="family pump: metric names repeat"):
        family(metrics=(Metric("rpm", "1/min"), Metric("rpm", "Hz")))


def test_device_family_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        GENERIC.report_interval_s = 1.0  # type: ignore[misc]
