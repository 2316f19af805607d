"""JSON merge patch (RFC 7396), the shadow delta (AWS rules) and the timestamped merge."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from twinfleet.twins import delta, merge_patch, merge_timestamped
from twinfleet.twins.merge import FLOOR, visible_stamps

# -- merge_patch: RFC 7396 appendix A -----------------------------------------------------------

# The appendix rows whose original and patch are both objects, as written in the RFC.
RFC7396_OBJECT_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]

# The rows with a non-object original or patch. merge_patch takes objects, so each is checked
# one level down (MergePatch({"x": T}, {"x": P}) == {"x": MergePatch(T, P)} for a non-null P).
RFC7396_WRAPPED_EXAMPLES = [
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, "bar", "bar"),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC7396_OBJECT_EXAMPLES)
def test_merge_patch_rfc7396_appendix_a(
    original: dict[str, Any], patch: dict[str, Any], result: dict[str, Any]
) -> None:
    target = copy.deepcopy(original)
    merge_patch(target, patch)
    assert target == result


@pytest.mark.parametrize(("original", "patch", "result"), RFC7396_WRAPPED_EXAMPLES)
def test_merge_patch_rfc7396_appendix_a_non_object_rows(
    original: Any, patch: Any, result: Any
) -> None:
    target = {"x": copy.deepcopy(original)}
    merge_patch(target, {"x": patch})
    assert target == {"x": result}


def test_merge_patch_rfc7396_null_patch_removes_the_member() -> None:
    # appendix row {"a":"foo"} + null -> null, one level down: the member goes away
    target: dict[str, Any] = {"x": {"a": "foo"}}
    merge_patch(target, {"x": None})
    assert target == {}


def test_merge_patch_null_for_missing_key_is_no_change() -> None:
    target = {"a": 1}
    assert merge_patch(target, {"b": None}) is False
    assert target == {"a": 1}


def test_merge_patch_reports_change() -> None:
    target = {"a": 1}
    assert merge_patch(target, {"a": 2}) is True
    assert merge_patch(target, {"a": 2}) is False
    assert merge_patch(target, {"a": 2.0}) is False  # 2 == 2.0 in JSON
    assert merge_patch(target, {"a": True}) is True  # but True is not 1
    assert target == {"a": True}


def test_merge_patch_empty_object_replaces_a_leaf_and_is_a_change() -> None:
    target: dict[str, Any] = {"a": 1}
    assert merge_patch(target, {"a": {}}) is True
    assert target == {"a": {}}


def test_merge_patch_empty_object_onto_object_is_no_change() -> None:
    target: dict[str, Any] = {"a": {"b": 1}}
    assert merge_patch(target, {"a": {}}) is False
    assert target == {"a": {"b": 1}}


def test_merge_patch_merges_nested_objects_in_place() -> None:
    inner = {"b": 1, "c": 2}
    target: dict[str, Any] = {"a": inner}
    merge_patch(target, {"a": {"c": 3, "d": {"e": 4}}})
    assert target == {"a": {"b": 1, "c": 3, "d": {"e": 4}}}
    assert target["a"] is inner


def test_merge_patch_replaces_arrays_whole() -> None:
    target: dict[str, Any] = {"a": [1, 2, 3]}
    merge_patch(target, {"a": [4]})
    assert target == {"a": [4]}


def test_merge_patch_keeps_nulls_inside_arrays() -> None:
    target: dict[str, Any] = {}
    merge_patch(target, {"a": [None, {"b": None}]})
    assert target == {"a": [None, {"b": None}]}


def test_merge_patch_does_not_keep_the_patch_objects() -> None:
    patch: dict[str, Any] = {"a": {"b": 1}}
    target: dict[str, Any] = {}
    merge_patch(target, patch)
    patch["a"]["b"] = 2
    assert target == {"a": {"b": 1}}


# -- delta --------------------------------------------------------------------------------------


def test_delta_includes_desired_keys_missing_from_reported() -> None:
    assert delta({"a": 1, "b": 2}, {"a": 1}) == {"b": 2}


def test_delta_excludes_reported_only_keys() -> None:
    assert delta({"a": 1}, {"a": 1, "extra": 5}) == {}


def test_delta_includes_changed_leaves_only() -> None:
    assert delta({"a": 1, "b": "x"}, {"a": 2, "b": "x"}) == {"a": 1}


def test_delta_recurses_into_nested_objects() -> None:
    desired = {"cfg": {"rate": 10, "mode": "eco", "net": {"ssid": "plant"}}}
    reported = {"cfg": {"rate": 10, "mode": "fast", "net": {"ssid": "plant", "rssi": -60}}}
    assert delta(desired, reported) == {"cfg": {"mode": "eco"}}


def test_delta_omits_nested_objects_that_match() -> None:
    assert delta({"cfg": {"a": 1}}, {"cfg": {"a": 1, "b": 2}}) == {}


def test_delta_includes_whole_desired_object_when_reported_has_a_leaf() -> None:
    assert delta({"cfg": {"a": 1}}, {"cfg": 5}) == {"cfg": {"a": 1}}


def test_delta_includes_desired_leaf_when_reported_has_an_object() -> None:
    assert delta({"cfg": 5}, {"cfg": {"a": 1}}) == {"cfg": 5}


def test_delta_treats_arrays_as_atomic() -> None:
    assert delta({"a": [1, 2, 3]}, {"a": [1, 2]}) == {"a": [1, 2, 3]}
    assert delta({"a": [1, 2]}, {"a": [1, 2]}) == {}
    assert delta({"a": [1, 2]}, {"a": [2, 1]}) == {"a": [1, 2]}


def test_delta_compares_numbers_as_json_does() -> None:
    assert delta({"a": 1}, {"a": 1.0}) == {}
    assert delta({"a": [1, {"b": 2}]}, {"a": [1.0, {"b": 2.0}]}) == {}


def test_delta_does_not_equate_booleans_and_numbers() -> None:
    assert delta({"a": True}, {"a": 1}) == {"a": True}
    assert delta({"a": 1}, {"a": True}) == {"a": 1}
    assert delta({"a": False}, {"a": 0}) == {"a": False}
    assert delta({"a": [True]}, {"a": [1]}) == {"a": [True]}


def test_delta_does_not_equate_strings_and_numbers() -> None:
    assert delta({"a": "1"}, {"a": 1}) == {"a": "1"}


def test_delta_of_empty_desired_is_empty() -> None:
    assert delta({}, {"a": 1}) == {}


# -- merge_timestamped --------------------------------------------------------------------------


def test_merge_timestamped_records_each_leaf_stamp() -> None:
    values: dict[str, Any] = {}
    stamps: dict[str, Any] = {}
    assert merge_timestamped(values, stamps, {"a": 1, "gps": {"lat": 2.0}}, 10.0) == 2
    assert values == {"a": 1, "gps": {"lat": 2.0}}
    assert visible_stamps(values, stamps) == {"a": 10.0, "gps": {"lat": 10.0}}


def test_merge_timestamped_keeps_newer_leaf() -> None:
    values: dict[str, Any] = {"a": 2}
    stamps: dict[str, Any] = {"a": 20.0}
    assert merge_timestamped(values, stamps, {"a": 1}, 10.0) == 0
    assert values == {"a": 2}
    assert stamps == {"a": 20.0}


def test_merge_timestamped_accepts_equal_stamp() -> None:
    values: dict[str, Any] = {"a": 2}
    stamps: dict[str, Any] = {"a": 20.0}
    assert merge_timestamped(values, stamps, {"a": 3}, 20.0) == 1
    assert values == {"a": 3}


def test_merge_timestamped_null_deletes_older_leaf_and_leaves_a_tombstone() -> None:
    values: dict[str, Any] = {"a": 1, "b": 2}
    stamps: dict[str, Any] = {"a": 10.0, "b": 10.0}
    assert merge_timestamped(values, stamps, {"a": None}, 11.0) == 1
    assert values == {"b": 2}
    assert stamps == {"a": 11.0, "b": 10.0}
    assert visible_stamps(values, stamps) == {"b": 10.0}


def test_merge_timestamped_null_does_not_delete_newer_leaf() -> None:
    values: dict[str, Any] = {"a": 1}
    stamps: dict[str, Any] = {"a": 10.0}
    assert merge_timestamped(values, stamps, {"a": None}, 9.0) == 0
    assert values == {"a": 1}


def test_merge_timestamped_leaf_against_object_with_a_newer_leaf_inside() -> None:
    # in time order: lat@5, "lost"@10 replaces the object, lon@15 starts a new one
    values: dict[str, Any] = {"gps": {"lat": 1.0, "lon": 2.0}}
    stamps: dict[str, Any] = {"gps": {"lat": 5.0, "lon": 15.0}}
    assert merge_timestamped(values, stamps, {"gps": "lost"}, 10.0) == 1
    assert values == {"gps": {"lon": 2.0}}
    assert stamps == {"gps": {"lon": 15.0, FLOOR: 10.0}}
    # anything in the object older than the floor is obsolete
    assert merge_timestamped(values, stamps, {"gps": {"lat": 9.0}}, 7.0) == 0
    assert values == {"gps": {"lon": 2.0}}


def test_merge_timestamped_object_cannot_replace_newer_leaf() -> None:
    values: dict[str, Any] = {"gps": "lost"}
    stamps: dict[str, Any] = {"gps": 20.0}
    assert merge_timestamped(values, stamps, {"gps": {"lat": 1.0}}, 10.0) == 0
    assert values == {"gps": "lost"}


def test_merge_timestamped_newer_object_replaces_leaf() -> None:
    values: dict[str, Any] = {"gps": "lost"}
    stamps: dict[str, Any] = {"gps": 10.0}
    assert merge_timestamped(values, stamps, {"gps": {"lat": 1.0}}, 20.0) == 1
    assert values == {"gps": {"lat": 1.0}}
    assert visible_stamps(values, stamps) == {"gps": {"lat": 20.0}}


def test_merge_timestamped_new_empty_object_counts_as_a_change() -> None:
    values: dict[str, Any] = {"a": 1}
    stamps: dict[str, Any] = {"a": 1.0}
    assert merge_timestamped(values, stamps, {"a": {}}, 2.0) == 1
    assert values == {"a": {}}


def test_merge_timestamped_collects_accepted_top_level_numbers() -> None:
    values: dict[str, Any] = {"old": 1}
    stamps: dict[str, Any] = {"old": 50.0}
    numeric: dict[str, float] = {}
    merge_timestamped(
        values,
        stamps,
        {"t": 21.5, "n": 3, "flag": True, "s": "x", "old": 2, "gps": {"lat": 1.0}},
        10.0,
        numeric,
    )
    # booleans, strings, nested and stale values are not model input
    assert numeric == {"t": 21.5, "n": 3}
