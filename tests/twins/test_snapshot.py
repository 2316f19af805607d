"""One snapshot reader: ``Twin.from_snapshot`` and every ``matches_snapshot`` read alike.

Each snapshot is tried whole, as an older version wrote it (optional keys missing) and with
optional keys null; the twin it brings back, its document and the snapshot itself must give
the same answer to every selector.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinfleet.errors import InvalidFilter
from twinfleet.twins import (
    AlarmRule,
    AlarmTracker,
    CommandRequest,
    Twin,
    TwinFilter,
    WithAlarms,
    parse_filter,
)
from twinfleet.twins import snapshot as snapshots
from twinfleet.twins.query import TwinSelector

T0 = 1_700_000_000.0

REQUIRED = (snapshots.ID, snapshots.VERSION)
OPTIONAL = (
    snapshots.TYPE,
    snapshots.TAGS,
    snapshots.REPORTED,
    snapshots.REPORTED_TS,
    snapshots.DESIRED,
    snapshots.DESIRED_TS,
    snapshots.CREATED,
    snapshots.UPDATED,
    snapshots.ONLINE,
    snapshots.LAST_SEEN,
    snapshots.PROTOCOL,
    snapshots.ANOMALY,
    snapshots.MODEL,
    snapshots.COMMANDS,
    snapshots.ALARMS,
    snapshots.LIFECYCLE,
)
NULLABLE = tuple(k for k in OPTIONAL if k not in (snapshots.CREATED, snapshots.UPDATED))


class HotModel:
    """Calls a reading anomalous when ``temp`` is over 50."""

    def __init__(self, name: str = "hot") -> None:
        self.name = name

    def update(self, values: Mapping[str, float], ts: float) -> tuple[float, bool, str | None]:
        temp = values.get("temp", 0.0)
        return temp / 10, temp > 50, "temp"

    def state(self) -> dict[str, Any]:
        return {"limit": 50}


def restore(name: str, state: Mapping[str, Any]) -> HotModel:
    return HotModel(name)


HOT = AlarmRule("hot", kind="threshold", metric="temp", op=">", value=30, raise_after=1)


def busy_twin() -> Twin:
    twin = Twin(
        "meter-3",
        device_type="smart-meter.water",
        tags={"site": "north", "owner": {"team": "ops"}},
        model=HotModel(),
        now=T0,
    )
    twin.set_model(twin.model, now=T0, info={"name": "hot", "source": "twin"}, bump=False)
    twin.set_alarm_rules((HOT,), now=T0)
    for i, temp in enumerate([20.0, 35.0, 60.0, 70.0]):
        twin.apply_message("telemetry", {"temp": temp}, now=T0 + i, ts=T0 + i, protocol="mqtt")
    twin.apply_message(
        "reported", {"firmware": {"version": "1.0", "status": "downloading"}}, now=T0 + 10
    )
    twin.patch_desired({"firmware": {"version": "2.0"}, "cfg": {"rate": 10}}, now=T0 + 11)
    twin.add_command(CommandRequest("reboot"), "c-1", now=T0 + 12)
    return twin


def cleared_alarm_twin() -> Twin:
    twin = Twin("pump-7", device_type="pump", now=T0)
    twin.set_alarm_rules((HOT,), now=T0)
    for i, temp in enumerate([40.0, 10.0, 10.0, 10.0, 10.0, 10.0]):
        twin.apply_message("telemetry", {"temp": temp}, now=T0 + i, ts=T0 + i, protocol="coap")
    twin.patch_tags({"site": "south", "line": 3}, now=T0 + 20)
    twin.mark_offline(now=T0 + 30)
    return twin


def acknowledged_twin() -> Twin:
    twin = Twin("monitor-1", device_type="patient-monitor", lifecycle="registered", now=T0)
    twin.set_alarm_rules((HOT,), now=T0)
    twin.apply_message("telemetry", {"temp": 45.0}, now=T0, ts=T0)
    (alarm,) = twin.alarms.alarms()
    twin.acknowledge_alarm(alarm["id"], who="ana", now=T0 + 1)
    twin.apply_message("reported", {"firmware": {"version": "3.1"}}, now=T0 + 2)
    twin.patch_desired({"firmware": {"version": "3.1"}}, now=T0 + 3)
    twin.set_lifecycle("suspended", now=T0 + 4)
    return twin


def json_snapshot(twin: Twin) -> dict[str, Any]:
    """A snapshot as a store gives it back."""
    snap: dict[str, Any] = orjson.loads(orjson.dumps(twin.snapshot()))
    return snap


BASES = [
    json_snapshot(Twin("new-1", now=T0)),
    json_snapshot(busy_twin()),
    json_snapshot(cleared_alarm_twin()),
    json_snapshot(acknowledged_twin()),
]


def fixed_filters() -> list[str]:
    """For each fixed field: is it present, is it null, is it true."""
    out = []
    for path in snapshots.FIXED_FIELDS:
        out += [f"exists {path}", f"{path} == null", f"{path} != null", path]
    return out


FILTERS = [
    "",
    *fixed_filters(),
    "id == 'meter-3'",
    "exists id",
    "version > 3",
    "type == 'generic'",
    "type startswith 'smart-meter.'",
    "tags.site == 'north'",
    "tags.owner.team == 'ops'",
    "not exists tags.site",
    "reported.temp > 30",
    "exists reported.firmware",
    "reported.firmware.version == '1.0'",
    "desired.cfg.rate == 10",
    "exists desired.firmware",
    "delta.firmware.version == '2.0'",
    "exists delta.cfg",
    "not exists delta.cfg.rate",
    "firmware.status in ['pending', 'downloading', 'up_to_date', 'unknown']",
    "firmware.status == 'downloading'",
    "firmware.status == 'up_to_date'",
    "firmware.current == '3.1'",
    "firmware.target == '2.0'",
    "connectivity.protocol == 'mqtt'",
    "connectivity.last_seen > 0",
    "anomaly.model == 'hot'",
    "anomaly.score > 5",
    "anomaly.since > 0",
    "metadata.created == 0",
    f"metadata.created == {T0}",
    f"metadata.updated > {T0}",
    "online and not anomalous",
    "anomalous or tags.line == 3",
]

TWIN_FILTERS = [
    TwinFilter(type=device_type, tags=tags, online=online, anomalous=anomalous)
    for device_type, tags, online, anomalous in itertools.product(
        [None, "generic", "smart-meter", "smart-meter.water", "pump", "patient-monitor"],
        list[Mapping[str, Any]](
            [{}, {"site": "north"}, {"site": "south", "line": 3}, {"owner": {"team": "ops"}}]
        ),
        [None, True, False],
        [None, True, False],
    )
]

ALARM_SELECTORS: list[TwinSelector] = [
    WithAlarms(),
    *(WithAlarms(frozenset({state})) for state in ("active", "acknowledged", "cleared")),
]


def assert_readers_agree(snap: dict[str, Any]) -> None:
    """The twin ``snap`` brings back and ``snap`` itself pass exactly the same selectors."""
    twin = Twin.from_snapshot(snap, restore_model=restore)
    doc = twin.document()
    for text in FILTERS:
        flt = parse_filter(text)
        assert flt.matches_snapshot(snap) == flt.matches_twin(twin) == flt.matches(doc), text
    selectors: list[TwinSelector] = [*TWIN_FILTERS, *ALARM_SELECTORS]
    for selector in selectors:
        assert selector.matches_snapshot(snap) == selector.matches_twin(twin), selector


@st.composite
def snapshots_of_every_age(draw: st.DrawFn) -> dict[str, Any]:
    """A snapshot with some optional keys gone (an older writer) and some null."""
    snap = dict(draw(st.sampled_from(BASES)))
    for key in draw(st.sets(st.sampled_from(OPTIONAL))):
        del snap[key]
    for key in draw(st.sets(st.sampled_from(NULLABLE))):
        snap[key] = None
    return snap


@pytest.mark.parametrize("snap", BASES, ids=[s["id"] for s in BASES])
def test_readers_agree_on_whole_snapshots(snap: dict[str, Any]) -> None:
    assert_readers_agree(snap)


@given(snapshots_of_every_age())
def test_readers_agree_on_snapshots_missing_keys(snap: dict[str, Any]) -> None:
    assert_readers_agree(snap)


@pytest.mark.parametrize("base", BASES, ids=[s["id"] for s in BASES])
def test_readers_agree_on_the_oldest_snapshot(base: dict[str, Any]) -> None:
    assert_readers_agree({key: base[key] for key in REQUIRED})


def test_the_samples_cover_what_the_selectors_can_tell_apart() -> None:
    """Guards the agreement tests: the snapshots differ in what the selectors read."""
    twins = [Twin.from_snapshot(snap, restore_model=restore) for snap in BASES]
    states = {a["state"] for twin in twins for a in twin.alarms.alarms()}
    assert states == {"active", "acknowledged", "cleared"}
    assert {twin.firmware()["status"] for twin in twins} >= {"downloading", "up_to_date"}
    assert {twin.online for twin in twins} == {True, False}
    assert {twin.anomalous for twin in twins} == {True, False}
    assert any(twin.commands for twin in twins)
    assert {twin.lifecycle for twin in twins} >= {"active", "suspended"}


def test_missing_keys_read_as_their_defaults() -> None:
    snap = {"id": "pump-7", "version": 4}
    assert snapshots.twin_type(snap) == "generic"
    assert snapshots.tags(snap) == snapshots.reported(snap) == snapshots.desired(snap) == {}
    assert snapshots.reported_ts(snap) == snapshots.desired_ts(snap) == {}
    assert snapshots.created(snap) == snapshots.updated(snap) == 0.0
    assert snapshots.online(snap) is False
    assert snapshots.last_seen(snap) is None
    assert snapshots.protocol(snap) is None
    assert snapshots.anomaly(snap) == (0.0, False, None)
    assert snapshots.model_name(snap) is None
    assert snapshots.model_state(snap) == {}
    assert snapshots.model_info(snap) is None
    assert snapshots.commands(snap) is None
    assert snapshots.alarm_state(snap) is None
    assert snapshots.lifecycle(snap) == "active"
    assert snapshots.firmware(snap) == {"current": None, "target": None, "status": "unknown"}
    assert snapshots.updated({**snap, "created": T0}) == T0


@given(snapshots_of_every_age())
def test_accessors_read_what_from_snapshot_restores(snap: dict[str, Any]) -> None:
    twin = Twin.from_snapshot(snap, restore_model=restore)
    assert (twin.type, twin.tags, twin.lifecycle) == (
        snapshots.twin_type(snap),
        snapshots.tags(snap),
        snapshots.lifecycle(snap),
    )
    assert (twin.reported, twin.reported_ts, twin.desired, twin.desired_ts) == (
        snapshots.reported(snap),
        snapshots.reported_ts(snap),
        snapshots.desired(snap),
        snapshots.desired_ts(snap),
    )
    assert (twin.created, twin.updated) == (snapshots.created(snap), snapshots.updated(snap))
    assert (twin.online, twin.last_seen, twin.protocol) == (
        snapshots.online(snap),
        snapshots.last_seen(snap),
        snapshots.protocol(snap),
    )
    assert (twin.anomaly_score, twin.anomalous, twin.anomaly_since) == snapshots.anomaly(snap)
    assert (twin.model.name if twin.model else None) == snapshots.model_name(snap)
    assert twin.model_info == snapshots.model_info(snap)
    assert twin.firmware() == snapshots.firmware(snap)
    assert twin.alarms.alarms() == AlarmTracker.saved_alarms(snapshots.alarm_state(snap))


def test_snapshot_writes_exactly_the_keys_the_reader_knows() -> None:
    for twin in (Twin("new-1", now=T0), busy_twin()):
        assert set(twin.snapshot()) == {*REQUIRED, *OPTIONAL}


def test_every_fixed_field_a_filter_can_name_has_a_snapshot_reader() -> None:
    doc = busy_twin().document()
    fixed = {
        f"{section}.{key}"
        for section in ("connectivity", "firmware", "anomaly", "metadata")
        for key in doc[section]
    }
    filterable = set()
    for path in fixed:
        try:
            parse_filter(f"exists {path}")
        except InvalidFilter:
            continue  # not in the filter language (anomaly.version, metadata.reported...)
        filterable.add(path)
    assert filterable == set(snapshots.FIXED_FIELDS)


def test_a_filter_on_a_snapshot_builds_no_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    snap = BASES[1]

    def no_rebuild(*args: object, **kwargs: object) -> Twin:
        raise AssertionError("a filter check rebuilt the twin")

    monkeypatch.setattr(Twin, "from_snapshot", no_rebuild)
    assert parse_filter("firmware.status == 'downloading'").matches_snapshot(snap)
    assert parse_filter("online and anomalous and anomaly.model == 'hot'").matches_snapshot(snap)
    assert TwinFilter(type="smart-meter", online=True).matches_snapshot(snap)
    assert WithAlarms().matches_snapshot(snap)
