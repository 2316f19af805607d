"""TwinFilter: one filter, evaluated the same way on live twins and on their snapshots."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from twinfleet.models import Verdict
from twinfleet.twins import Twin, TwinFilter

T0 = 1_700_000_000.0


class AlwaysAnomalous:
    name = "always"

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        return Verdict(99.0, True, None)

    def state(self) -> dict[str, Any]:
        return {}


def fleet() -> list[Twin]:
    twins = []
    for i, (device_type, online, anomalous, tags) in enumerate(
        itertools.product(
            [None, "smart-meter", "smart-meter.water", "smart-meterx", "patient-monitor"],
            [False, True],
            [False, True],
            [{}, {"site": "north"}, {"site": "south", "line": 3}, {"site": "north", "line": 3}],
        )
    ):
        twin = Twin(
            f"dev-{i}",
            device_type=device_type,
            tags=tags,
            model=AlwaysAnomalous() if anomalous else None,
            now=T0,
        )
        if online or anomalous:
            twin.apply_message("telemetry", {"t": 1.0}, now=T0)
        if not online:
            twin.mark_offline(now=T0 + 1)
        twins.append(twin)
    return twins


FILTERS = [
    TwinFilter(),
    TwinFilter(type="smart-meter"),
    TwinFilter(type="smart-meter.water"),
    TwinFilter(type="generic"),
    TwinFilter(online=True),
    TwinFilter(online=False),
    TwinFilter(anomalous=True),
    TwinFilter(anomalous=False),
    TwinFilter(tags={"site": "north"}),
    TwinFilter(tags={"site": "north", "line": 3}),
    TwinFilter(tags={"line": 3}),
    TwinFilter(type="smart-meter", online=True, anomalous=False, tags={"site": "south"}),
]


@pytest.mark.parametrize("flt", FILTERS, ids=repr)
def test_matches_and_matches_snapshot_agree(flt: TwinFilter) -> None:
    for twin in fleet():
        snap = orjson.loads(orjson.dumps(twin.snapshot()))
        assert flt.matches(twin) == flt.matches_snapshot(snap), twin


def test_fleet_covers_every_combination() -> None:
    twins = fleet()
    assert {(t.online, t.anomalous) for t in twins} == {
        (False, False),
        (False, True),
        (True, False),
        (True, True),
    }


def test_empty_filter_matches_everything() -> None:
    assert all(TwinFilter().matches(t) for t in fleet())


def test_type_matches_family_and_its_subtypes_only() -> None:
    flt = TwinFilter(type="smart-meter")
    types = {t.type for t in fleet() if flt.matches(t)}
    assert types == {"smart-meter", "smart-meter.water"}


def test_exact_subtype_does_not_match_its_family() -> None:
    types = {t.type for t in fleet() if TwinFilter(type="smart-meter.water").matches(t)}
    assert types == {"smart-meter.water"}


def test_untyped_twin_is_generic() -> None:
    types = {t.type for t in fleet() if TwinFilter(type="generic").matches(t)}
    assert types == {"generic"}


def test_all_tags_must_match() -> None:
    flt = TwinFilter(tags={"site": "north", "line": 3})
    matched = [t.tags for t in fleet() if flt.matches(t)]
    assert matched
    assert all(tags == {"site": "north", "line": 3} for tags in matched)


def test_online_and_anomalous_filters() -> None:
    for twin in fleet():
        assert TwinFilter(online=True).matches(twin) is twin.online
        assert TwinFilter(anomalous=True).matches(twin) is twin.anomalous


def test_snapshot_without_optional_fields_counts_as_generic_offline_normal() -> None:
    snap = {"id": "x", "version": 0}
    assert TwinFilter(type="generic", online=False, anomalous=False).matches_snapshot(snap)
    assert not TwinFilter(online=True).matches_snapshot(snap)


def test_filter_tags_are_an_immutable_copy() -> None:
    tags = {"site": "north"}
    flt = TwinFilter(tags=tags)
    tags["site"] = "south"
    assert flt.tags == {"site": "north"}
    with pytest.raises(TypeError):
        flt.tags["site"] = "east"  # type: ignore[index]


def test_filter_tags_must_be_a_mapping() -> None:
    with pytest.raises(TypeError, match="tags must be a mapping"):
        TwinFilter(tags=["site"])  # type: ignore[arg-type]


def test_filters_with_equal_fields_are_equal() -> None:
    assert TwinFilter(type="a", online=True) == TwinFilter(type="a", online=True)
