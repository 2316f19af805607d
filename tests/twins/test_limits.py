"""Limits: device ids, nesting depth and timestamps."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from helpers import nested

from twinfleet.twins import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_PAYLOAD_BYTES,
    InvalidDeviceId,
    InvalidTimestamp,
    NestingTooDeep,
    check_depth,
    parse_timestamp,
    validate_device_id,
)


def test_limits_are_those_of_the_design() -> None:
    assert MAX_DOCUMENT_BYTES == 32 * 1024
    assert MAX_DEPTH == 10
    assert MAX_PAYLOAD_BYTES == 128 * 1024


# -- device ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "device_id",
    ["a", "0", "pump-7", "sensor_01", "plant.hall-3", "urn:dev:42", "A.b_c:d-e", "x" * 128],
)
def test_valid_device_id_is_returned_unchanged(device_id: str) -> None:
    assert validate_device_id(device_id) == device_id


def test_valid_device_id_passes_twice() -> None:
    # the second call takes the cache of known-good ids
    assert validate_device_id("repeat-me") == "repeat-me"
    assert validate_device_id("repeat-me") == "repeat-me"


@pytest.mark.parametrize(
    "device_id",
    ["", "x" * 129, "has space", " lead", "trail ", "a/b", "a\nb", "tab\t", "ümlaut", "a#b", "a+b"],
)
def test_invalid_device_id_string_raises(device_id: str) -> None:
    with pytest.raises(InvalidDeviceId, match=r"must match \[A-Za-z0-9\._:-\]\{1,128\}") as info:
        validate_device_id(device_id)
    assert info.value.field == "id"
    assert info.value.code == "invalid_device_id"


@pytest.mark.parametrize("device_id", [None, 7, 7.5, b"pump-7", ["pump-7"], {"id": "x"}, True])
def test_non_string_device_id_raises_invalid_device_id(device_id: object) -> None:
    with pytest.raises(InvalidDeviceId, match="must be a string") as info:
        validate_device_id(device_id)
    assert info.value.field == "id"


def test_invalid_device_id_stays_invalid_after_a_valid_one() -> None:
    validate_device_id("ok-id")
    with pytest.raises(InvalidDeviceId, match="must match"):
        validate_device_id("ok-id/")


# -- nesting ------------------------------------------------------------------------------------


def test_check_depth_accepts_exactly_max_depth() -> None:
    check_depth(nested(MAX_DEPTH))


def test_check_depth_rejects_one_level_more() -> None:
    with pytest.raises(NestingTooDeep, match="deeper than 10 levels"):
        check_depth(nested(MAX_DEPTH + 1))


def test_check_depth_counts_from_base() -> None:
    check_depth(nested(MAX_DEPTH - 1), base=1)
    with pytest.raises(NestingTooDeep, match="deeper than 10"):
        check_depth(nested(MAX_DEPTH), base=1)


def test_check_depth_reports_the_given_field() -> None:
    with pytest.raises(NestingTooDeep, match="nest deeper") as info:
        check_depth(nested(20), field="desired")
    assert info.value.field == "desired"


def test_check_depth_looks_at_every_branch() -> None:
    value = {"shallow": 1, "also": {"x": 1}, "deep": nested(MAX_DEPTH)}
    with pytest.raises(NestingTooDeep, match="nest deeper"):
        check_depth(value)


def test_check_depth_counts_arrays_as_levels() -> None:
    value: Any = 1
    for _ in range(MAX_DEPTH):
        value = [value]
    check_depth({"a": value}, base=-1)  # the outer object sits at level 0
    with pytest.raises(NestingTooDeep, match="nest deeper"):
        check_depth({"a": [value]}, base=-1)


def test_check_depth_finds_objects_nested_inside_arrays() -> None:
    value: Any = {"x": 1}
    for _ in range(MAX_DEPTH):
        value = [{"x": value}]
    with pytest.raises(NestingTooDeep, match="nest deeper"):
        check_depth({"a": value})


# -- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (1_700_000_000, 1_700_000_000.0),
        (1_700_000_000.25, 1_700_000_000.25),
        ("2024-01-01T00:00:00Z", 1_704_067_200.0),
        ("2024-01-01T00:00:00z", 1_704_067_200.0),
        ("2024-01-01T00:00:00+00:00", 1_704_067_200.0),
        ("2024-01-01T01:00:00+01:00", 1_704_067_200.0),
        ("2023-12-31T19:30:00-04:30", 1_704_067_200.0),
        ("2024-01-01T00:00:00.5Z", 1_704_067_200.5),
        ("2024-01-01 00:00:00Z", 1_704_067_200.0),
        ("  2024-01-01T00:00:00Z  ", 1_704_067_200.0),
    ],
)
def test_parse_timestamp_accepts_unix_seconds_and_rfc3339(value: object, expected: float) -> None:
    assert parse_timestamp(value) == pytest.approx(expected)


def test_parse_timestamp_returns_float() -> None:
    assert type(parse_timestamp(5)) is float


def test_parse_timestamp_agrees_with_datetime() -> None:
    moment = datetime(2031, 5, 17, 8, 9, 10, tzinfo=timezone.utc)
    assert parse_timestamp(moment.isoformat()) == moment.timestamp()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "cannot be a boolean"),
        (False, "cannot be a boolean"),
        (-1, "out of range"),
        (float("nan"), "out of range"),
        (float("inf"), "out of range"),
        (float("-inf"), "out of range"),
        (40_000_000_000, "out of range"),
        (10**400, "out of range"),
        ("1969-12-31T23:59:59Z", "out of range"),
        ("3001-01-01T00:00:00Z", "out of range"),
        ("2024-01-01T00:00:00", "no time zone offset"),
        ("2024-01-01", "no time zone offset"),
        ("yesterday", "neither Unix seconds nor RFC 3339"),
        ("1700000000", "neither Unix seconds nor RFC 3339"),
        ("", "neither Unix seconds nor RFC 3339"),
        (None, "neither a number nor a string"),
        ([1_700_000_000], "neither a number nor a string"),
    ],
)
def test_parse_timestamp_rejects_with_clear_error(value: object, message: str) -> None:
    with pytest.raises(InvalidTimestamp, match=message) as info:
        parse_timestamp(value)
    assert info.value.field == "ts"


def test_parse_timestamp_reports_the_given_field() -> None:
    with pytest.raises(InvalidTimestamp, match="neither") as info:
        parse_timestamp("nope", field="telemetry.ts")
    assert info.value.field == "telemetry.ts"
