"""The twin: versions, desired and tags as merge patches, timestamped reported state, limits."""

from __future__ import annotations

import copy
import math
from datetime import datetime
from typing import Any

import orjson
import pytest
from helpers import nested

from twinfleet.errors import InvalidRequest
from twinfleet.twins import (
    MAX_DEPTH,
    DeviceRefused,
    DocumentTooLarge,
    InvalidPatch,
    InvalidTimestamp,
    NestingTooDeep,
    Twin,
    VersionConflict,
    family_for,
)

T0 = 1_700_000_000.0


def make_twin(**kwargs: Any) -> Twin:
    return Twin("pump-7", now=T0, **kwargs)


def state_of(twin: Twin) -> dict[str, Any]:
    """Everything observable about a twin, to prove a failed call changed nothing."""
    return copy.deepcopy(twin.snapshot())


# -- a new twin ---------------------------------------------------------------------------------


def test_new_twin_starts_at_version_zero_offline_and_empty() -> None:
    twin = make_twin()
    assert twin.version == 0
    assert twin.online is False
    assert twin.last_seen is None
    assert twin.reported == {}
    assert twin.desired == {}
    assert twin.delta() == {}


def test_new_twin_without_type_is_generic() -> None:
    twin = make_twin()
    assert twin.type == "generic"
    assert twin.family.name == "generic"


def test_new_twin_takes_family_from_type() -> None:
    twin = make_twin(device_type="smart-meter.water")
    assert twin.type == "smart-meter.water"
    assert twin.family is family_for("smart-meter")


def test_new_twin_copies_its_tags() -> None:
    tags = {"site": "north"}
    twin = make_twin(tags=tags)
    tags["site"] = "south"
    assert twin.tags == {"site": "north"}


# -- versions -----------------------------------------------------------------------------------


def test_version_rises_by_one_per_accepted_change() -> None:
    twin = make_twin()
    twin.patch_desired({"rate": 10}, now=T0 + 1)
    assert twin.version == 1
    twin.apply_message("telemetry", {"t": 1.0, "h": 2.0, "p": 3.0}, now=T0 + 2)
    assert twin.version == 2  # one message, three leaves: one version
    twin.patch_tags({"site": "north"}, now=T0 + 3)
    assert twin.version == 3
    twin.apply_message("reported", {"fw": "1.0"}, now=T0 + 4)
    assert twin.version == 4
    twin.mark_offline(now=T0 + 5)
    assert twin.version == 5
    twin.set_model(None, now=T0 + 6)
    assert twin.version == 6


def test_version_rises_on_fast_path_update_of_existing_keys() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 1.0}, now=T0, ts=T0)
    twin.apply_message("telemetry", {"t": 2.0}, now=T0 + 1, ts=T0 + 1)
    assert twin.version == 2
    assert twin.reported == {"t": 2.0}


def test_patch_that_changes_nothing_keeps_version() -> None:
    twin = make_twin()
    twin.patch_desired({"rate": 10}, now=T0)
    assert twin.patch_desired({"rate": 10}, now=T0 + 1) is False
    assert twin.patch_desired({"rate": 10.0}, now=T0 + 1) is False
    assert twin.patch_desired({"missing": None}, now=T0 + 1) is False
    assert twin.patch_tags({}, now=T0 + 1) is False
    assert twin.version == 1
    assert twin.updated == T0


def test_updated_follows_the_last_change() -> None:
    twin = make_twin()
    assert twin.created == T0
    twin.patch_desired({"a": 1}, now=T0 + 7)
    assert twin.updated == T0 + 7
    assert twin.created == T0


def test_matching_expected_version_is_accepted() -> None:
    twin = make_twin()
    assert twin.patch_desired({"a": 1}, now=T0, expected_version=0) is True
    assert twin.patch_desired({"a": 2}, now=T0, expected_version=1) is True
    assert twin.patch_tags({"x": 1}, now=T0, expected_version=2) is True
    assert twin.version == 3


def test_expected_version_mismatch_on_desired_raises_and_changes_nothing() -> None:
    twin = make_twin()
    twin.patch_desired({"a": 1}, now=T0)
    before = state_of(twin)

    with pytest.raises(VersionConflict, match="at version 1, not the expected 0") as info:
        twin.patch_desired({"a": 2, "b": 3}, now=T0 + 1, expected_version=0)

    assert (info.value.expected, info.value.actual, info.value.twin_id) == (0, 1, "pump-7")
    assert state_of(twin) == before
    assert twin.version == 1
    assert twin.desired == {"a": 1}


def test_expected_version_mismatch_on_tags_raises_and_changes_nothing() -> None:
    twin = make_twin(tags={"site": "north"})
    before = state_of(twin)

    with pytest.raises(VersionConflict, match="not the expected 5"):
        twin.patch_tags({"site": None}, now=T0 + 1, expected_version=5)

    assert state_of(twin) == before


def test_expected_version_is_checked_before_the_patch_itself() -> None:
    twin = make_twin()
    with pytest.raises(VersionConflict, match="expected 9"):
        twin.patch_desired({"a": math.nan}, now=T0, expected_version=9)


def test_check_version_without_expectation_passes() -> None:
    twin = make_twin()
    twin.check_version(None)
    twin.check_version(0)
    with pytest.raises(VersionConflict, match="expected 1"):
        twin.check_version(1)


# -- desired: merge patches ---------------------------------------------------------------------


def test_desired_patch_merges_nested_objects() -> None:
    twin = make_twin()
    twin.patch_desired({"cfg": {"rate": 10, "net": {"ssid": "plant"}}}, now=T0)
    twin.patch_desired({"cfg": {"net": {"pw": "x"}}}, now=T0 + 1)
    assert twin.desired == {"cfg": {"rate": 10, "net": {"ssid": "plant", "pw": "x"}}}


def test_desired_null_deletes_a_key() -> None:
    twin = make_twin()
    twin.patch_desired({"a": 1, "cfg": {"b": 2, "c": 3}}, now=T0)
    twin.patch_desired({"a": None, "cfg": {"b": None}}, now=T0 + 1)
    assert twin.desired == {"cfg": {"c": 3}}


def test_desired_arrays_are_replaced_whole() -> None:
    twin = make_twin()
    twin.patch_desired({"schedule": [1, 2, 3]}, now=T0)
    twin.patch_desired({"schedule": [9]}, now=T0 + 1)
    assert twin.desired == {"schedule": [9]}


def test_desired_metadata_stamps_touched_leaves_and_drops_deleted_ones() -> None:
    twin = make_twin()
    twin.patch_desired({"a": 1, "cfg": {"b": 2, "c": 3}}, now=T0 + 1)
    twin.patch_desired({"a": None, "cfg": {"b": 5}}, now=T0 + 2)
    meta = twin.document()["metadata"]["desired"]
    assert meta == {"cfg": {"b": T0 + 2, "c": T0 + 1}}


def test_desired_patch_must_be_an_object() -> None:
    twin = make_twin()
    with pytest.raises(InvalidPatch, match="desired patch must be a JSON object"):
        twin.patch_desired([1, 2], now=T0)  # type: ignore[arg-type]


# -- tags ---------------------------------------------------------------------------------------


def test_tags_are_merge_patched() -> None:
    twin = make_twin(tags={"site": "north", "line": 3})
    assert twin.patch_tags({"line": None, "owner": {"team": "ops"}}, now=T0) is True
    assert twin.tags == {"site": "north", "owner": {"team": "ops"}}
    assert twin.version == 1


def test_tags_patch_must_be_an_object() -> None:
    twin = make_twin()
    with pytest.raises(InvalidPatch, match="tags patch must be a JSON object"):
        twin.patch_tags("site=north", now=T0)  # type: ignore[arg-type]


# -- reported: device messages and timestamps ---------------------------------------------------


def test_message_sets_connectivity() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 1.0}, now=T0 + 5, protocol="mqtt")
    assert twin.online is True
    assert twin.last_seen == T0 + 5
    assert twin.protocol == "mqtt"


def test_message_without_protocol_keeps_the_known_one() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 1.0}, now=T0, protocol="coap")
    twin.apply_message("telemetry", {"t": 2.0}, now=T0 + 1)
    assert twin.protocol == "coap"


def test_message_returns_number_of_accepted_leaves() -> None:
    twin = make_twin()
    assert twin.apply_message("reported", {"a": 1, "b": {"c": 2, "d": 3}}, now=T0) == 3


def test_message_without_any_ts_is_stamped_now() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 1.0}, now=T0 + 3)
    assert twin.reported_ts == {"t": T0 + 3}


def test_transport_ts_is_the_measurement_time() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 1.0}, now=T0 + 3, ts=T0 + 1)
    assert twin.reported_ts == {"t": T0 + 1}


@pytest.mark.parametrize(
    "payload_ts",
    [
        T0 + 100,
        int(T0) + 100,
        datetime.fromtimestamp(T0 + 100).astimezone().isoformat(),
        "2023-11-14T22:15:00Z",
        "2023-11-14T23:15:00+01:00",
        "2023-11-14T17:45:00-04:30",
    ],
)
def test_ts_inside_payload_wins_over_transport_ts(payload_ts: object) -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 1.0, "ts": payload_ts}, now=T0 + 500, ts=T0 + 1)

    assert twin.reported_ts == {"t": T0 + 100}  # T0 + 100 is 2023-11-14T22:15:00Z
    assert twin.reported == {"t": 1.0}  # ts is not a reported value


def test_ts_inside_payload_is_not_stored_nor_does_it_mutate_the_payload() -> None:
    twin = make_twin()
    payload = {"t": 1.0, "ts": T0}
    twin.apply_message("telemetry", payload, now=T0)
    assert "ts" not in twin.reported
    assert payload == {"t": 1.0, "ts": T0}


def test_invalid_ts_inside_payload_raises_and_changes_nothing() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 1.0}, now=T0)
    before = state_of(twin)
    with pytest.raises(InvalidTimestamp, match="neither Unix seconds nor RFC 3339"):
        twin.apply_message("telemetry", {"t": 2.0, "ts": "noon"}, now=T0 + 1)
    assert state_of(twin) == before


def test_older_reading_never_overwrites_newer_one() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 2.0}, now=T0, ts=T0 + 20)
    twin.apply_message("telemetry", {"t": 1.0}, now=T0 + 1, ts=T0 + 10)
    assert twin.reported == {"t": 2.0}
    assert twin.reported_ts == {"t": T0 + 20}


def test_older_reading_never_overwrites_newer_one_on_the_copying_path() -> None:
    twin = make_twin()
    twin.apply_message("reported", {"cfg": {"mode": "new"}}, now=T0, ts=T0 + 20)
    # a nested object takes the path that merges on a copy
    assert twin.apply_message("reported", {"cfg": {"mode": "old"}}, now=T0, ts=T0 + 10) == 0
    assert twin.reported == {"cfg": {"mode": "new"}}


def test_stale_message_does_not_bump_version_but_counts_as_seen() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 2.0}, now=T0, ts=T0 + 20)
    assert twin.apply_message("telemetry", {"t": 1.0}, now=T0 + 30, ts=T0 + 10) == 0
    assert twin.version == 1
    assert twin.updated == T0
    assert twin.last_seen == T0 + 30


def test_reading_with_equal_timestamp_is_accepted() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 1.0}, now=T0, ts=T0 + 10)
    assert twin.apply_message("telemetry", {"t": 3.0}, now=T0 + 1, ts=T0 + 10) == 1
    assert twin.reported == {"t": 3.0}
    assert twin.version == 2


def test_payload_ts_decides_staleness_not_arrival_order() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 2.0, "ts": "2023-11-14T22:15:00Z"}, now=T0 + 2)
    twin.apply_message("telemetry", {"t": 1.0, "ts": "2023-11-14T23:14:00+01:00"}, now=T0 + 3)
    assert twin.reported == {"t": 2.0}


def test_message_with_some_stale_leaves_accepts_only_fresh_ones() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"a": 1, "b": 1}, now=T0, ts=T0 + 10)
    twin.apply_message("telemetry", {"b": 2}, now=T0, ts=T0 + 30)
    assert twin.apply_message("telemetry", {"a": 3, "b": 3}, now=T0, ts=T0 + 20) == 1
    assert twin.reported == {"a": 3, "b": 2}
    assert twin.reported_ts == {"a": T0 + 20, "b": T0 + 30}
    assert twin.version == 3


def test_nested_reported_patch_with_mixed_stale_and_fresh_leaves() -> None:
    twin = make_twin()
    twin.apply_message("reported", {"gps": {"lat": 1.0}}, now=T0, ts=T0 + 10)
    twin.apply_message("reported", {"gps": {"lon": 2.0}}, now=T0, ts=T0 + 30)

    accepted = twin.apply_message(
        "reported", {"gps": {"lat": 5.0, "lon": 6.0, "alt": 7.0}}, now=T0, ts=T0 + 20
    )

    assert accepted == 2
    assert twin.reported == {"gps": {"lat": 5.0, "lon": 2.0, "alt": 7.0}}
    assert twin.document()["metadata"]["reported"] == {
        "gps": {"lat": T0 + 20, "lon": T0 + 30, "alt": T0 + 20}
    }
    assert twin.version == 3


def test_telemetry_ignores_null_values() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 1.0, "h": 50.0}, now=T0, ts=T0)
    accepted = twin.apply_message("telemetry", {"t": None, "h": 55.0}, now=T0 + 1, ts=T0 + 1)
    assert accepted == 1
    assert twin.reported == {"t": 1.0, "h": 55.0}


def test_telemetry_of_only_nulls_changes_nothing() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 1.0}, now=T0, ts=T0)
    assert twin.apply_message("telemetry", {"t": None}, now=T0 + 1, ts=T0 + 1) == 0
    assert twin.reported == {"t": 1.0}
    assert twin.version == 1


def test_reported_null_deletes_the_key_and_keeps_a_tombstone() -> None:
    twin = make_twin()
    twin.apply_message("reported", {"fw": "1.0", "mode": "eco"}, now=T0, ts=T0)
    assert twin.apply_message("reported", {"mode": None}, now=T0 + 1, ts=T0 + 1) == 1
    assert twin.reported == {"fw": "1.0"}
    assert twin.document()["metadata"]["reported"] == {"fw": T0}
    assert twin.version == 2


def test_stale_reported_null_does_not_delete() -> None:
    twin = make_twin()
    twin.apply_message("reported", {"mode": "eco"}, now=T0, ts=T0 + 10)
    assert twin.apply_message("reported", {"mode": None}, now=T0 + 1, ts=T0 + 5) == 0
    assert twin.reported == {"mode": "eco"}


def test_reported_empty_object_over_a_leaf_is_a_versioned_change() -> None:
    twin = make_twin()
    twin.apply_message("reported", {"cfg": 1}, now=T0, ts=T0)
    assert twin.apply_message("reported", {"cfg": {}}, now=T0 + 1, ts=T0 + 1) == 1
    assert twin.reported == {"cfg": {}}
    assert twin.version == 2


def test_message_payload_must_be_an_object() -> None:
    twin = make_twin()
    with pytest.raises(InvalidPatch, match="telemetry payload must be a JSON object"):
        twin.apply_message("telemetry", [1, 2], now=T0)  # type: ignore[arg-type]


def test_reported_values_do_not_alias_later_changes_of_a_nested_patch() -> None:
    twin = make_twin()
    payload: dict[str, Any] = {"cfg": {"a": 1}}
    twin.apply_message("reported", payload, now=T0)
    payload["cfg"]["a"] = 2
    assert twin.reported == {"cfg": {"a": 1}}


# -- limits -------------------------------------------------------------------------------------


def test_desired_over_32_kb_raises_and_leaves_twin_unchanged() -> None:
    twin = make_twin()
    twin.patch_desired({"small": 1}, now=T0)
    before = state_of(twin)
    with pytest.raises(DocumentTooLarge, match="over the 32768 byte limit") as info:
        twin.patch_desired({"blob": "x" * 33_000}, now=T0 + 1)
    assert info.value.field == "desired"
    assert state_of(twin) == before


def test_desired_just_under_32_kb_is_accepted() -> None:
    twin = make_twin()
    assert twin.patch_desired({"blob": "x" * 32_000}, now=T0) is True


def test_reported_over_32_kb_raises_and_leaves_twin_unchanged() -> None:
    twin = make_twin()
    twin.apply_message("reported", {"a": 1}, now=T0)
    before = state_of(twin)
    with pytest.raises(DocumentTooLarge, match="byte limit") as info:
        twin.apply_message("reported", {"blob": "x" * 33_000}, now=T0 + 1)
    assert info.value.field == "reported"
    assert state_of(twin) == before


def test_replacing_existing_values_cannot_grow_document_past_the_limit() -> None:
    twin = make_twin()
    keys = [f"k{i:03d}" for i in range(500)]
    twin.apply_message("telemetry", dict.fromkeys(keys, 0), now=T0, ts=T0)
    before = state_of(twin)
    # every value is a short string into an existing key, yet together they pass 32 KB
    with pytest.raises(DocumentTooLarge, match="byte limit"):
        twin.apply_message("telemetry", dict.fromkeys(keys, "x" * 64), now=T0 + 1, ts=T0 + 1)
    assert state_of(twin) == before


def test_limit_counts_reported_desired_and_tags_together() -> None:
    twin = make_twin(tags={"note": "t" * 11_000})
    twin.patch_desired({"blob": "d" * 11_000}, now=T0)
    twin.apply_message("reported", {"blob": "r" * 10_000}, now=T0)
    with pytest.raises(DocumentTooLarge, match="byte limit") as info:
        twin.patch_tags({"more": "m" * 2_000}, now=T0)
    assert info.value.field == "tags"
    assert "more" not in twin.tags


def test_desired_nesting_of_ten_levels_in_the_document_is_accepted() -> None:
    twin = make_twin()
    # document (1) > desired (2) > nine objects of the patch below it
    assert twin.patch_desired(nested(MAX_DEPTH - 1), now=T0) is True


def test_desired_nesting_deeper_than_ten_raises_and_changes_nothing() -> None:
    twin = make_twin()
    with pytest.raises(NestingTooDeep, match="deeper than 10 levels") as info:
        twin.patch_desired(nested(MAX_DEPTH), now=T0)
    assert info.value.field == "desired"
    assert twin.desired == {}
    assert twin.version == 0


@pytest.mark.parametrize("kind", ["telemetry", "reported"])
def test_reported_nesting_deeper_than_ten_raises(kind: str) -> None:
    twin = make_twin()
    twin.apply_message(kind, nested(MAX_DEPTH - 1), now=T0)  # type: ignore[arg-type]
    with pytest.raises(NestingTooDeep, match="deeper than 10") as info:
        twin.apply_message(kind, nested(MAX_DEPTH), now=T0)  # type: ignore[arg-type]
    assert info.value.field == kind


def test_nesting_through_arrays_is_limited_too() -> None:
    twin = make_twin()
    value: Any = 1
    for _ in range(300):
        value = [value]
    with pytest.raises(NestingTooDeep, match="nest deeper"):
        twin.patch_desired({"a": value}, now=T0)
    with pytest.raises(NestingTooDeep, match="nest deeper"):
        twin.apply_message("reported", {"a": value}, now=T0)
    assert twin.version == 0


def test_tags_nesting_deeper_than_ten_raises() -> None:
    twin = make_twin()
    with pytest.raises(NestingTooDeep, match="deeper than 10"):
        twin.patch_tags(nested(MAX_DEPTH), now=T0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_desired_non_finite_float_raises_invalid_patch(bad: float) -> None:
    twin = make_twin()
    with pytest.raises(InvalidPatch, match="not a finite number") as info:
        twin.patch_desired({"cfg": {"gain": bad}}, now=T0)
    assert info.value.field == "desired.cfg.gain"
    assert twin.version == 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("kind", ["telemetry", "reported"])
def test_message_non_finite_float_raises_and_changes_nothing(kind: str, bad: float) -> None:
    twin = make_twin()
    twin.apply_message(kind, {"t": 1.0}, now=T0)  # type: ignore[arg-type]
    before = state_of(twin)
    with pytest.raises(InvalidPatch, match="not a finite number"):
        twin.apply_message(kind, {"t": bad}, now=T0 + 1)  # type: ignore[arg-type]  # in place
    with pytest.raises(InvalidPatch, match="not a finite number"):
        twin.apply_message(kind, {"new": bad}, now=T0 + 1)  # type: ignore[arg-type]  # new key
    with pytest.raises(InvalidPatch, match="not a finite number"):
        twin.apply_message(kind, {"gps": {"lat": bad}}, now=T0 + 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidPatch, match="not a finite number"):
        twin.apply_message(kind, {"list": [1.0, bad]}, now=T0 + 1)  # type: ignore[arg-type]
    assert state_of(twin) == before


@pytest.mark.parametrize(
    "bad",
    [{1, 2}, (1, 2), b"bytes", object(), datetime(2024, 1, 1), 1 + 2j],
    ids=["set", "tuple", "bytes", "object", "datetime", "complex"],
)
def test_non_json_values_raise_invalid_patch(bad: object) -> None:
    twin = make_twin()
    twin.apply_message("reported", {"a": 1}, now=T0)
    with pytest.raises(InvalidPatch, match="which JSON cannot hold"):
        twin.patch_desired({"a": bad}, now=T0)
    with pytest.raises(InvalidPatch, match="which JSON cannot hold"):
        twin.apply_message("reported", {"a": bad}, now=T0)
    with pytest.raises(InvalidPatch, match="which JSON cannot hold"):
        twin.patch_tags({"nested": {"a": [bad]}}, now=T0)
    assert twin.version == 1


@pytest.mark.parametrize("key", [1, None, ""], ids=["int", "none", "empty"])
def test_keys_must_be_non_empty_strings(key: object) -> None:
    twin = make_twin()
    with pytest.raises(InvalidPatch, match="key that is empty, not a string, or holds NUL"):
        twin.patch_desired({"cfg": {key: 1}}, now=T0)


@pytest.mark.parametrize("big", [2**64, -(2**63) - 1, 10**30])
def test_integers_beyond_64_bits_raise_invalid_patch(big: int) -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"n": 1}, now=T0)
    with pytest.raises(InvalidPatch, match="beyond 64 bits"):
        twin.patch_desired({"n": big}, now=T0)
    with pytest.raises(InvalidPatch, match="beyond 64 bits"):
        twin.apply_message("telemetry", {"n": big}, now=T0 + 1)  # existing key: in place
    with pytest.raises(InvalidPatch, match="beyond 64 bits"):
        twin.apply_message("reported", {"deep": {"n": big}}, now=T0 + 1)
    assert twin.reported == {"n": 1}
    orjson.dumps(twin.snapshot())  # the twin stays serializable


def test_integers_at_the_64_bit_edges_are_accepted() -> None:
    twin = make_twin()
    twin.patch_desired({"lo": -(2**63), "hi": 2**64 - 1}, now=T0)
    assert orjson.loads(orjson.dumps(twin.document()))["desired"] == {
        "lo": -(2**63),
        "hi": 2**64 - 1,
    }


# -- views --------------------------------------------------------------------------------------


def test_document_has_exactly_the_contract_keys() -> None:
    doc = make_twin().document()
    assert set(doc) == {
        "id",
        "type",
        "lifecycle",  # the device registry's state (issue 4), beside the contract's keys
        "tags",
        "version",
        "reported",
        "desired",
        "delta",
        "metadata",
        "connectivity",
        "firmware",
        "anomaly",
        "alarms",  # open and recently cleared alarms (issue 5)
    }
    assert set(doc["connectivity"]) == {"online", "last_seen", "protocol"}
    assert set(doc["firmware"]) == {"current", "target", "status"}
    # the contract's four, and which version of the model scored it and how it was chosen
    assert set(doc["anomaly"]) == {"model", "version", "source", "score", "anomalous", "since"}


def test_document_of_a_new_twin() -> None:
    doc = make_twin(device_type="smart-sensor", tags={"site": "north"}).document()
    assert doc["id"] == "pump-7"
    assert doc["type"] == "smart-sensor"
    assert doc["tags"] == {"site": "north"}
    assert doc["version"] == 0
    assert doc["connectivity"] == {"online": False, "last_seen": None, "protocol": None}
    assert doc["firmware"] == {"current": None, "target": None, "status": "unknown"}
    assert doc["anomaly"] == {
        "model": None,
        "version": None,
        "source": None,
        "score": 0.0,
        "anomalous": False,
        "since": None,
    }
    assert doc["metadata"]["created"] == T0


def test_document_is_json_ready() -> None:
    twin = make_twin(tags={"site": "north"})
    twin.patch_desired({"cfg": {"rate": 10}, "list": [1, 2]}, now=T0)
    twin.apply_message("reported", {"cfg": {"rate": 5}}, now=T0, protocol="mqtt")
    doc = twin.document()
    assert orjson.loads(orjson.dumps(doc)) == doc


def test_document_is_a_deep_copy() -> None:
    twin = make_twin(tags={"site": {"name": "north"}})
    twin.patch_desired({"cfg": {"rate": 10}, "list": [1, 2]}, now=T0)
    twin.apply_message("reported", {"gps": {"lat": 1.0}, "list": [3]}, now=T0)
    before = state_of(twin)

    doc = twin.document()
    doc["tags"]["site"]["name"] = "changed"
    doc["reported"]["gps"]["lat"] = 99.0
    doc["reported"]["list"].append(4)
    doc["desired"]["cfg"]["rate"] = 99
    doc["desired"]["list"].append(3)
    doc["delta"]["cfg"]["rate"] = 77
    doc["delta"]["list"].append(5)
    doc["metadata"]["reported"]["gps"]["lat"] = 0.0
    doc["metadata"]["desired"]["cfg"]["rate"] = 0.0
    doc["connectivity"]["online"] = False

    assert state_of(twin) == before
    assert twin.document()["delta"] == {"cfg": {"rate": 10}, "list": [1, 2]}


def test_document_delta_follows_desired_and_reported() -> None:
    twin = make_twin()
    twin.patch_desired({"rate": 10, "mode": "eco"}, now=T0)
    twin.apply_message("reported", {"rate": 10, "mode": "fast", "extra": 1}, now=T0)
    assert twin.document()["delta"] == {"mode": "eco"}
    twin.apply_message("reported", {"mode": "eco"}, now=T0 + 1)
    assert twin.document()["delta"] == {}


def test_document_metadata_holds_reported_stamps() -> None:
    twin = make_twin()
    twin.apply_message("reported", {"gps": {"lat": 1.0}}, now=T0 + 5, ts=T0 + 2)
    meta = twin.document()["metadata"]
    assert meta["reported"] == {"gps": {"lat": T0 + 2}}
    assert meta["updated"] == T0 + 5


@pytest.mark.parametrize(
    ("reported", "desired", "expected"),
    [
        ({}, {}, {"current": None, "target": None, "status": "unknown"}),
        ({"version": "1.0"}, {}, {"current": "1.0", "target": None, "status": "up_to_date"}),
        (
            {"version": "1.0"},
            {"version": "1.0"},
            {"current": "1.0", "target": "1.0", "status": "up_to_date"},
        ),
        (
            {"version": "1.0"},
            {"version": "2.0"},
            {"current": "1.0", "target": "2.0", "status": "pending"},
        ),
        ({}, {"version": "2.0"}, {"current": None, "target": "2.0", "status": "pending"}),
        (
            {"version": "1.0", "status": "downloading"},
            {"version": "2.0"},
            {"current": "1.0", "target": "2.0", "status": "downloading"},
        ),
        (
            {"version": "1.0", "status": "installing"},
            {"version": "2.0"},
            {"current": "1.0", "target": "2.0", "status": "installing"},
        ),
        (
            {"version": "1.0", "status": "failed"},
            {"version": "2.0"},
            {"current": "1.0", "target": "2.0", "status": "failed"},
        ),
        (
            {"version": "1.0", "status": "rebooting"},
            {"version": "2.0"},
            {"current": "1.0", "target": "2.0", "status": "pending"},
        ),
        (
            {"version": "2.0", "status": "failed"},
            {"version": "2.0"},
            {"current": "2.0", "target": "2.0", "status": "up_to_date"},
        ),
    ],
)
def test_firmware_status_is_derived_from_reported_and_desired(
    reported: dict[str, Any], desired: dict[str, Any], expected: dict[str, Any]
) -> None:
    twin = make_twin()
    if reported:
        twin.apply_message("reported", {"firmware": reported}, now=T0)
    if desired:
        twin.patch_desired({"firmware": desired}, now=T0)
    assert twin.firmware() == expected
    assert twin.document()["firmware"] == expected


def test_firmware_ignores_non_object_firmware_sections() -> None:
    twin = make_twin()
    twin.apply_message("reported", {"firmware": "1.0"}, now=T0)
    twin.patch_desired({"firmware": "2.0"}, now=T0)
    assert twin.firmware() == {"current": None, "target": None, "status": "unknown"}


# -- presence -----------------------------------------------------------------------------------


def test_mark_offline_is_news_once() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 1.0}, now=T0)
    assert twin.mark_offline(now=T0 + 100) is True
    assert twin.online is False
    assert twin.version == 2
    assert twin.updated == T0 + 100
    assert twin.mark_offline(now=T0 + 200) is False
    assert twin.version == 2


def test_mark_offline_of_a_never_seen_twin_is_no_news() -> None:
    twin = make_twin()
    assert twin.mark_offline(now=T0) is False
    assert twin.version == 0


def test_message_brings_an_offline_twin_back_online() -> None:
    twin = make_twin()
    twin.apply_message("telemetry", {"t": 1.0}, now=T0)
    twin.mark_offline(now=T0 + 100)
    twin.apply_message("telemetry", {"t": 2.0}, now=T0 + 200)
    assert twin.online is True
    assert twin.document()["connectivity"]["last_seen"] == T0 + 200


def test_repr_names_id_type_and_version() -> None:
    assert repr(make_twin()) == "Twin('pump-7', type='generic', version=0)"


# -- known gaps ---------------------------------------------------------------------------------


def test_older_reading_does_not_resurrect_a_newer_deletion() -> None:
    twin = make_twin()
    twin.apply_message("reported", {"mode": "eco"}, now=T0, ts=T0 + 10)
    twin.apply_message("reported", {"mode": None}, now=T0, ts=T0 + 30)
    twin.apply_message("reported", {"mode": "fast"}, now=T0, ts=T0 + 20)
    assert twin.reported == {}


def test_older_object_leaf_does_not_survive_a_newer_leaf_in_between() -> None:
    twin = make_twin()
    # arrival order 3, 2, 1; in order 1, 2, 3 the result is {"gps": {"lon": 2.0}}
    twin.apply_message("reported", {"gps": {"lon": 2.0}}, now=T0, ts=T0 + 3)
    twin.apply_message("reported", {"gps": "lost"}, now=T0, ts=T0 + 2)
    twin.apply_message("reported", {"gps": {"lat": 1.0}}, now=T0, ts=T0 + 1)
    assert twin.reported == {"gps": {"lon": 2.0}}


def test_lifecycle_of_a_registered_device() -> None:
    twin = Twin("reg-1", device_type="smart-sensor", lifecycle="registered", now=T0)
    assert twin.apply_message("telemetry", {"temperature": 1.0}, now=T0, ts=T0) == 1
    assert twin.lifecycle == "active"
    assert twin.set_lifecycle("suspended", now=T0) is True
    with pytest.raises(DeviceRefused, match="suspended"):
        twin.apply_message("telemetry", {"temperature": 2.0}, now=T0, ts=T0 + 1)
    assert twin.reported == {"temperature": 1.0}
    twin.set_lifecycle("active", now=T0)
    twin.apply_message("telemetry", {"temperature": 3.0}, now=T0, ts=T0 + 2)
    twin.set_lifecycle("decommissioned", now=T0)
    with pytest.raises(DeviceRefused, match="decommissioned"):
        twin.apply_message("telemetry", {"temperature": 4.0}, now=T0, ts=T0 + 3)
    with pytest.raises(InvalidRequest, match="for good"):
        twin.set_lifecycle("active", now=T0)
    with pytest.raises(InvalidRequest, match="lifecycle"):
        twin.set_lifecycle("sleeping", now=T0)
    assert Twin.from_snapshot(twin.snapshot()).lifecycle == "decommissioned"
