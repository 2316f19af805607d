"""Property tests: merge patch against the RFC's algorithm, order-free timestamped merges, delta."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from twinfleet.twins import Twin, delta, merge_patch, merge_timestamped

KEYS = st.sampled_from(["a", "b", "c", "d", "e"])  # few keys, so patches hit existing ones
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)
OBJECTS = st.dictionaries(KEYS, JSON, max_size=5)

PROPERTY_SETTINGS = settings(deadline=None)  # shared CI machines can be slow


def reference_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 section 2, written out as the RFC's pseudocode; returns a new value."""
    if isinstance(patch, dict):
        result = dict(target) if isinstance(target, dict) else {}
        for name, value in patch.items():
            if value is None:
                result.pop(name, None)
            else:
                result[name] = reference_merge_patch(result.get(name), value)
        return result
    return patch


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: 1 == 1.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    return bool(a == b)


def without_nulls_in_objects(value: Any) -> Any:
    """What a merge patch leaves behind: objects never hold null (arrays may)."""
    return reference_merge_patch({}, value) if isinstance(value, dict) else value


# -- merge_patch --------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(target=OBJECTS, patch=OBJECTS)
def test_merge_patch_equals_the_rfc_algorithm(
    target: dict[str, Any], patch: dict[str, Any]
) -> None:
    expected = reference_merge_patch(target, patch)
    patch_before = copy.deepcopy(patch)
    result = copy.deepcopy(target)

    changed = merge_patch(result, patch)

    assert json_equal(result, expected)
    assert changed == (not json_equal(target, expected))
    assert json_equal(patch, patch_before)  # the patch is not consumed


@PROPERTY_SETTINGS
@given(target=OBJECTS, patch=OBJECTS)
def test_merge_patch_is_idempotent(target: dict[str, Any], patch: dict[str, Any]) -> None:
    merge_patch(target, patch)
    once = copy.deepcopy(target)
    assert merge_patch(target, patch) is False
    assert json_equal(target, once)


# -- delta --------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(desired=OBJECTS.map(without_nulls_in_objects), reported=OBJECTS)
def test_delta_is_empty_once_reported_takes_desired(
    desired: dict[str, Any], reported: dict[str, Any]
) -> None:
    merge_patch(reported, desired)
    assert delta(desired, reported) == {}


@PROPERTY_SETTINGS
@given(desired=OBJECTS.map(without_nulls_in_objects))
def test_delta_against_nothing_reported_is_all_of_desired(desired: dict[str, Any]) -> None:
    assert json_equal(delta(desired, {}), desired)


@PROPERTY_SETTINGS
@given(desired=OBJECTS.map(without_nulls_in_objects), reported=OBJECTS)
def test_twin_delta_is_empty_after_device_reports_desired(
    desired: dict[str, Any], reported: dict[str, Any]
) -> None:
    twin = Twin("pump-7", now=0.0)
    twin.apply_message("reported", reported, now=1.0)
    twin.patch_desired(desired, now=2.0)
    twin.apply_message("reported", copy.deepcopy(twin.desired), now=3.0)
    assert twin.delta() == {}
    assert twin.document()["delta"] == {}


# -- merge_timestamped --------------------------------------------------------------------------

LEAVES = st.booleans() | st.integers(-1000, 1000) | st.text(max_size=3)
# A fixed shape: "a".."c" always hold leaves, "gps" always an object of leaves. (Keys that
# switch between a leaf and an object, and nulls, are covered further down.)
READING = st.fixed_dictionaries(
    {},
    optional={
        "a": LEAVES,
        "b": LEAVES,
        "c": LEAVES,
        "gps": st.dictionaries(st.sampled_from(["lat", "lon", "alt"]), LEAVES, max_size=3),
    },
)


@st.composite
def readings_and_two_orders(
    draw: st.DrawFn, reading: st.SearchStrategy[dict[str, Any]] = READING
) -> tuple[list[tuple[float, Any]], list[int]]:
    """Readings with distinct timestamps, and a second arrival order for them."""
    patches = draw(st.lists(reading, min_size=1, max_size=8))
    stamps = draw(
        st.lists(st.integers(0, 10_000), min_size=len(patches), max_size=len(patches), unique=True)
    )
    readings = [(float(ts), patch) for ts, patch in zip(stamps, patches, strict=True)]
    order = draw(st.permutations(range(len(readings))))
    return readings, list(order)


def last_writer_wins(readings: list[tuple[float, Any]]) -> dict[str, Any]:
    """For every leaf path, the value of the newest reading that has it."""
    result: dict[str, Any] = {}
    for _, patch in sorted(readings, key=lambda r: r[0]):
        merge_patch(result, copy.deepcopy(patch))
    return result


@PROPERTY_SETTINGS
@given(case=readings_and_two_orders())
def test_timestamped_merge_converges_whatever_the_arrival_order(
    case: tuple[list[tuple[float, Any]], list[int]],
) -> None:
    readings, order = case
    results = []
    for sequence in (readings, [readings[i] for i in order]):
        values: dict[str, Any] = {}
        stamps: dict[str, Any] = {}
        for ts, patch in sequence:
            merge_timestamped(values, stamps, copy.deepcopy(patch), ts)
        results.append((values, stamps))

    assert results[0] == results[1]
    assert json_equal(results[0][0], last_writer_wins(readings))


@PROPERTY_SETTINGS
@given(case=readings_and_two_orders())
def test_twin_reported_state_converges_whatever_the_arrival_order(
    case: tuple[list[tuple[float, Any]], list[int]],
) -> None:
    readings, order = case
    twins = [Twin("pump-7", now=0.0), Twin("pump-7", now=0.0)]
    for twin, sequence in zip(twins, (readings, [readings[i] for i in order]), strict=True):
        for ts, patch in sequence:
            twin.apply_message("reported", copy.deepcopy(patch), now=ts, ts=ts)

    assert twins[0].reported == twins[1].reported
    assert twins[0].reported_ts == twins[1].reported_ts
    assert twins[0].delta() == twins[1].delta()


# Readings that delete keys and switch a key between a leaf and an object: the hard cases
# (tombstones and floors keep the result independent of arrival order).
SHAPE_SHIFTING_READING = st.fixed_dictionaries(
    {},
    optional={
        "a": st.one_of(st.none(), LEAVES),
        "b": st.one_of(st.none(), LEAVES),
        "gps": st.one_of(
            st.none(),
            LEAVES,
            st.dictionaries(
                st.sampled_from(["lat", "lon"]), st.one_of(st.none(), LEAVES), max_size=2
            ),
        ),
    },
)


@PROPERTY_SETTINGS
@given(case=readings_and_two_orders(SHAPE_SHIFTING_READING))
def test_deletes_and_shape_changes_converge_whatever_the_arrival_order(
    case: tuple[list[tuple[float, Any]], list[int]],
) -> None:
    readings, order = case
    finals = []
    for sequence in (readings, [readings[i] for i in order]):
        values: dict[str, Any] = {}
        stamps: dict[str, Any] = {}
        for ts, patch in sequence:
            merge_timestamped(values, stamps, copy.deepcopy(patch), ts)
        finals.append(values)
    assert json_equal(finals[0], finals[1])
    assert json_equal(finals[1], last_writer_wins(readings))
