"""The filter language: parsing, normal form, evaluation on documents, snapshots and live twins."""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinfleet.twins import (
    MAX_FILTER_DEPTH,
    MAX_FILTER_LENGTH,
    MAX_FILTER_LIST,
    Comparison,
    Conjunction,
    Disjunction,
    Existence,
    Expression,
    FieldPath,
    Filter,
    InvalidFilter,
    Membership,
    Negation,
    Twin,
    TwinFilter,
    parse_filter,
)

T0 = 1_700_000_000.0
PROPERTY_SETTINGS = settings(deadline=None)  # shared CI machines can be slow


class ThresholdModel:
    """Calls a reading anomalous when any of its numbers is over 30."""

    name = "threshold"

    def update(self, values: Mapping[str, float], ts: float) -> tuple[float, bool, str | None]:
        top = max(values.values())
        return float(top), top > 30, None

    def state(self) -> dict[str, Any]:
        return {}


def path(text: str) -> FieldPath:
    section, *keys = text.split(".")
    return FieldPath(section, tuple(keys))


def cmp(field: str, op: str, value: Any) -> Comparison:
    return Comparison(path(field), op, value)


def is_true(field: str) -> Comparison:
    return cmp(field, "==", True)


ONLINE = is_true("connectivity.online")
ANOMALOUS = is_true("anomaly.anomalous")


# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reported.temperature > 30", cmp("reported.temperature", ">", 30)),
        ("reported.t >= -2.5e3", cmp("reported.t", ">=", -2500.0)),
        ("reported.t < 1E-2", cmp("reported.t", "<", 0.01)),
        ("reported.t <= 0", cmp("reported.t", "<=", 0)),
        ("tags.site == 'plant-a'", cmp("tags.site", "==", "plant-a")),
        ('tags.site != "plant-a"', cmp("tags.site", "!=", "plant-a")),
        ("desired.on == true", cmp("desired.on", "==", True)),
        ("desired.on == false", cmp("desired.on", "==", False)),
        ("connectivity.last_seen == null", cmp("connectivity.last_seen", "==", None)),
        ("id == 'pump-7'", cmp("id", "==", "pump-7")),
        ("type == 'plc'", cmp("type", "==", "plc")),
        ("version >= 3", cmp("version", ">=", 3)),
        ("delta.mode == 'eco'", cmp("delta.mode", "==", "eco")),
        ("firmware.status == 'failed'", cmp("firmware.status", "==", "failed")),
        ("anomaly.score > 2", cmp("anomaly.score", ">", 2)),
        ("metadata.updated < 5", cmp("metadata.updated", "<", 5)),
        ("reported.a.b.c == 1", cmp("reported.a.b.c", "==", 1)),
        ("reported.x-y:z == 1", cmp("reported.x-y:z", "==", 1)),
        ("reported.0 == 1", cmp("reported.0", "==", 1)),
        ("reported.and == 1", cmp("reported.and", "==", 1)),
        ("reported.`flow rate` == 1", Comparison(FieldPath("reported", ("flow rate",)), "==", 1)),
        ("reported.`a``b`.c == 1", Comparison(FieldPath("reported", ("a`b", "c")), "==", 1)),
        ("reported.`é` == 1", Comparison(FieldPath("reported", ("é",)), "==", 1)),
        (
            "reported.x in [1, 'a', true, null]",
            Membership(path("reported.x"), (1, "a", True, None)),
        ),
        ("reported.x in []", Membership(path("reported.x"), ())),
        ("reported.x not in [1]", Negation(Membership(path("reported.x"), (1,)))),
        ("exists reported.x", Existence(path("reported.x"))),
        ("reported.x exists", Existence(path("reported.x"))),
        ("not exists reported.x", Negation(Existence(path("reported.x")))),
        ("reported.x not exists", Negation(Existence(path("reported.x")))),
        ("tags.site startswith 'plant'", cmp("tags.site", "startswith", "plant")),
        ("tags.zones contains 'north'", cmp("tags.zones", "contains", "north")),
        ("tags.zones contains 3", cmp("tags.zones", "contains", 3)),
        ("online", ONLINE),
        ("anomalous", ANOMALOUS),
        ("reported.enabled", is_true("reported.enabled")),
        ("connectivity.online == true", ONLINE),
        ("not online", Negation(ONLINE)),
        ("online and not anomalous", Conjunction((ONLINE, Negation(ANOMALOUS)))),
        ("online or anomalous", Disjunction((ONLINE, ANOMALOUS))),
        ("(online)", ONLINE),
        ("  online\n\tand\r\nanomalous  ", Conjunction((ONLINE, ANOMALOUS))),
        ("reported.x==1", cmp("reported.x", "==", 1)),
        ("reported.x>-1", cmp("reported.x", ">", -1)),
        (r'tags.s == "a\"b\\c\/d\n\t\r\b\f"', cmp("tags.s", "==", 'a"b\\c/d\n\t\r\b\f')),
        (r"tags.s == 'it\'s \"q\"'", cmp("tags.s", "==", 'it\'s "q"')),
        (r'tags.s == "\u00e9\ud83d\ude00"', cmp("tags.s", "==", "é\U0001f600")),
        ('tags.s == "ünï ☃"', cmp("tags.s", "==", "ünï ☃")),
    ],
)
def test_parses_each_construct(text: str, expected: Expression) -> None:
    assert parse_filter(text) == Filter(expected)


def test_big_integers_stay_exact() -> None:
    flt = parse_filter("reported.n == 123456789012345678901234567890")

    assert isinstance(flt.expression, Comparison)
    assert flt.expression.value == 123456789012345678901234567890


@pytest.mark.parametrize("text", ["", " ", "\n\t  "])
def test_empty_filter_is_everything(text: str) -> None:
    flt = parse_filter(text)

    assert flt == Filter()
    assert flt.expression is None
    assert str(flt) == ""
    assert flt.matches({})
    assert flt.matches_snapshot({})


A, B, C = (is_true(f"reported.{k}") for k in "abc")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reported.a or reported.b and reported.c", Disjunction((A, Conjunction((B, C))))),
        ("reported.a and reported.b or reported.c", Disjunction((Conjunction((A, B)), C))),
        ("not reported.a and reported.b", Conjunction((Negation(A), B))),
        ("not reported.a or reported.b", Disjunction((Negation(A), B))),
        ("not (reported.a or reported.b)", Negation(Disjunction((A, B)))),
        ("(reported.a or reported.b) and reported.c", Conjunction((Disjunction((A, B)), C))),
        ("not not reported.a", Negation(Negation(A))),
        ("reported.a and (reported.b and reported.c)", Conjunction((A, B, C))),
        ("(reported.a or reported.b) or reported.c", Disjunction((A, B, C))),
        ("not reported.a in [1]", Negation(Membership(path("reported.a"), (1,)))),
        (
            "not reported.a == 1 and reported.b",
            Conjunction((Negation(cmp("reported.a", "==", 1)), B)),
        ),
    ],
)
def test_precedence_is_not_then_and_then_or(text: str, expected: Expression) -> None:
    assert parse_filter(text).expression == expected


def test_keywords_are_lowercase_only() -> None:
    with pytest.raises(InvalidFilter):
        parse_filter("online AND anomalous")


# -- normal form --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("online", "connectivity.online == true"),
        ("not anomalous", "not anomaly.anomalous == true"),
        ("reported.x exists", "exists reported.x"),
        ("reported.x not in [1,2]", "not reported.x in [1, 2]"),
        ("reported.x not exists", "not exists reported.x"),
        ("tags.s=='a'", 'tags.s == "a"'),
        ("tags.s == 'say \"hi\"\\n'", r'tags.s == "say \"hi\"\n"'),
        ("reported.`x` == 1.50", "reported.x == 1.5"),
        ("reported.`a b`.`c``d` == 1e3", "reported.`a b`.`c``d` == 1000.0"),
        (
            "(reported.a or reported.b) and reported.c",
            "(reported.a == true or reported.b == true) and reported.c == true",
        ),
        ("((reported.a and reported.b))", "reported.a == true and reported.b == true"),
        ("not (reported.a and reported.b)", "not (reported.a == true and reported.b == true)"),
        ("not (reported.a == 1)", "not reported.a == 1"),
        (
            "reported.a == 1 or (reported.b == 2 and reported.c == 3)",
            "reported.a == 1 or reported.b == 2 and reported.c == 3",
        ),
    ],
)
def test_str_is_the_normal_form(text: str, normal: str) -> None:
    flt = parse_filter(text)

    assert str(flt) == normal
    assert parse_filter(normal) == flt
    assert repr(flt) == f"parse_filter({normal!r})"


def test_true_and_one_are_different_filters() -> None:
    assert parse_filter("reported.x == 1") == parse_filter("reported.x == 1.0")
    assert parse_filter("reported.x == 1") != parse_filter("reported.x == true")
    assert parse_filter("reported.x in [1]") != parse_filter("reported.x in [true]")
    assert parse_filter("reported.x == 0") != parse_filter("reported.x == false")


ODD_KEYS = st.text(min_size=1, max_size=6) | st.sampled_from(["a", "and", "-1", "1e5", "a`b", "`"])
ANY_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
FIXED_PATHS = [
    FieldPath("id"),
    FieldPath("type"),
    FieldPath("version"),
    *(
        FieldPath(section, (key,))
        for section, keys in {
            "connectivity": ("online", "last_seen", "protocol"),
            "firmware": ("current", "target", "status"),
            "anomaly": ("model", "score", "anomalous", "since"),
            "metadata": ("created", "updated"),
        }.items()
        for key in keys
    ),
]


def expressions(keys: st.SearchStrategy[str], scalars: st.SearchStrategy[Any]) -> Any:
    """Random filter expressions over the paths ``keys`` make and the literals ``scalars``."""
    paths = st.sampled_from(FIXED_PATHS) | st.builds(
        FieldPath,
        st.sampled_from(["tags", "reported", "desired", "delta"]),
        keys.map(lambda key: (key,)) | st.lists(keys, min_size=2, max_size=3).map(tuple),
    )
    atoms = (
        st.builds(Comparison, paths, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), scalars)
        | st.builds(Comparison, paths, st.just("contains"), scalars)
        | st.builds(Comparison, paths, st.just("startswith"), scalars.filter(_is_str))
        | st.builds(Comparison, paths, st.just("startswith"), st.text(max_size=3))
        | st.builds(Membership, paths, st.lists(scalars, max_size=4).map(tuple))
        | st.builds(Existence, paths)
    )
    return st.recursive(
        atoms,
        lambda children: (
            st.builds(Negation, children)
            | st.builds(Conjunction, st.lists(children, min_size=2, max_size=3).map(tuple))
            | st.builds(Disjunction, st.lists(children, min_size=2, max_size=3).map(tuple))
        ),
        max_leaves=8,
    )


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


@PROPERTY_SETTINGS
@given(expression=expressions(ODD_KEYS, ANY_SCALARS))
def test_normal_form_parses_back_to_an_equal_filter(expression: Expression) -> None:
    flt = Filter(expression)
    text = str(flt)

    back = parse_filter(text)

    assert back == flt
    assert hash(back) == hash(flt)
    assert str(back) == text


# -- evaluation ---------------------------------------------------------------------------------


def plant_twin() -> Twin:
    twin = Twin(
        "pump-7",
        device_type="smart-meter.water",
        tags={"site": "plant-a"},
        model=ThresholdModel(),
        now=T0,
    )
    twin.apply_message(
        "reported",
        {
            "firmware": {"version": "1.2.0", "status": "installing"},
            "flow rate": 7,
            "nested": {"level": 4},
            "cfg": 5,
        },
        now=T0 + 1,
    )
    twin.apply_message(
        "telemetry",
        {"temperature": 31.5, "pressure": 2, "mode": "auto", "valves": ["v1", "v2", 3]},
        now=T0 + 2,
        protocol="mqtt",
    )
    twin.patch_desired(
        {
            "mode": "eco",
            "nested": {"level": 4, "limit": 9},
            "cfg": {"a": 1},
            "firmware": {"version": "1.3.0"},
        },
        now=T0 + 3,
    )
    twin.patch_tags({"zones": ["north", "east"], "line": 3, "odd`key": True}, now=T0 + 4)
    return twin


def every_form(flt: Filter, twin: Twin) -> set[bool]:
    """The filter's verdict on each form of the twin, JSON round trips included."""
    doc, snap = twin.document(), twin.snapshot()
    return {
        flt.matches(doc),
        flt.matches(orjson.loads(orjson.dumps(doc))),
        flt.matches_snapshot(snap),
        flt.matches_snapshot(orjson.loads(orjson.dumps(snap))),
        flt.matches_twin(twin),
    }


PLANT_CASES = [
    ("", True),
    ("reported.temperature > 30", True),
    ("reported.temperature > 31.5", False),
    ("reported.temperature >= 31.5", True),
    ("reported.pressure == 2.0", True),
    ("reported.pressure == true", False),
    ("reported.pressure > 1 and reported.pressure < 10", True),
    ("reported.mode == 'auto'", True),
    ("reported.mode > 'a'", True),
    ("reported.mode > 1", False),
    ("reported.mode < 1", False),
    ("reported.mode != 1", True),
    ("reported.missing == 1", False),
    ("reported.missing != 1", True),
    ("reported.missing < 1", False),
    ("not reported.missing < 1", True),
    ("reported.missing", False),
    ("reported.missing == null", False),
    ("reported.nested.level == 4", True),
    ("reported.nested.level.deeper == 4", False),
    ("reported.nested == 4", False),
    ("exists reported.nested", True),
    ("exists reported.nested.level", True),
    ("exists reported.nothing", False),
    ("not exists reported.nothing", True),
    ("reported.nothing not exists", True),
    ("reported.valves contains 'v1'", True),
    ("reported.valves contains 3.0", True),
    ("reported.valves contains 'v'", False),
    ("reported.valves.0 == 'v1'", False),
    ("reported.mode contains 'ut'", True),
    ("reported.mode contains 1", False),
    ("reported.pressure contains 2", False),
    ("reported.mode startswith 'au'", True),
    ("reported.mode startswith 'ut'", False),
    ("reported.pressure startswith '2'", False),
    ("reported.mode in ['eco', 'auto']", True),
    ("reported.mode in []", False),
    ("reported.pressure in [1, 2.0]", True),
    ("reported.mode not in ['eco', 'auto']", False),
    ("reported.missing not in ['eco']", True),
    ("reported.missing in ['eco', null]", False),
    ("reported.`flow rate` == 7", True),
    ("reported.firmware.version == '1.2.0'", True),
    ("desired.mode == 'eco'", True),
    ("desired.cfg.a == 1", True),
    ("tags.site == 'plant-a'", True),
    ("tags.site startswith 'plant'", True),
    ("tags.zones contains 'north'", True),
    ("tags.zones == 'north'", False),
    ("tags.line == 3", True),
    ("tags.line", False),
    ("tags.`odd``key`", True),
    ("id == 'pump-7'", True),
    ("id startswith 'pump-'", True),
    ("type == 'smart-meter.water'", True),
    ("type == 'smart-meter'", False),
    ("type startswith 'smart-meter.'", True),
    ("version == 4", True),
    ("version > 4", False),
    ("online", True),
    ("online and anomalous", True),
    ("not anomalous", False),
    ("connectivity.protocol == 'mqtt'", True),
    ("connectivity.last_seen == 1700000002", True),
    ("connectivity.last_seen != null", True),
    ("anomaly.score > 30", True),
    ("anomaly.model == 'threshold'", True),
    ("anomaly.since == 1700000002", True),
    ("exists anomaly.since", True),
    ("firmware.current == '1.2.0'", True),
    ("firmware.target == '1.3.0'", True),
    ("firmware.status == 'installing'", True),
    ("delta.mode == 'eco'", True),
    ("delta.nested.limit == 9", True),
    ("delta.nested.level == 4", False),
    ("exists delta.nested.level", False),
    ("exists delta.nested", True),
    ("exists delta.temperature", False),
    ("delta.cfg.a == 1", True),
    ("delta.firmware.version == '1.3.0'", True),
    ("metadata.created == 1700000000", True),
    ("metadata.updated == 1700000004", True),
    ("tags.line == 4 or online and anomalous", True),
    ("(tags.line == 4 or online) and not anomalous", False),
    ("not (tags.line == 4 or reported.mode == 'eco')", True),
]


@pytest.mark.parametrize(("text", "expected"), PLANT_CASES)
def test_evaluates_the_same_on_every_form_of_a_twin(text: str, expected: bool) -> None:
    assert every_form(parse_filter(text), plant_twin()) == {expected}


def test_a_fresh_twin() -> None:
    twin = Twin("fresh", now=T0)
    cases = {
        "type == 'generic'": True,
        "online": False,
        "anomalous": False,
        "anomaly.model == null": True,
        "anomaly.since == null": True,
        "connectivity.last_seen == null": True,
        "connectivity.protocol == null": True,
        "firmware.status == 'unknown'": True,
        "firmware.current == null": True,
        "exists delta.x": False,
        "tags.site != 'x'": True,
        "version == 0": True,
    }
    for text, expected in cases.items():
        assert every_form(parse_filter(text), twin) == {expected}, text


def test_an_offline_twin() -> None:
    twin = plant_twin()
    twin.mark_offline(now=T0 + 5)

    assert every_form(parse_filter("online"), twin) == {False}
    assert every_form(parse_filter("not online and connectivity.last_seen > 0"), twin) == {True}


def test_snapshot_defaults_follow_from_snapshot() -> None:
    snap = {"id": "old", "version": 3}
    flt_cases = {
        "type == 'generic'": True,
        "online": False,
        "anomaly.score == 0": True,
        "anomalous": False,
        "anomaly.model == null": True,
        "reported.x exists": False,
        "metadata.created == 0": True,
        "firmware.status == 'unknown'": True,
    }
    for text, expected in flt_cases.items():
        assert parse_filter(text).matches_snapshot(snap) is expected, text
        assert parse_filter(text).matches_twin(Twin.from_snapshot(snap)) is expected, text


def fleet() -> list[Twin]:
    twins = []
    for i, (device_type, online, anomalous, tags) in enumerate(
        itertools.product(
            [None, "smart-meter", "smart-meter.water", "smart-meterx"],
            [False, True],
            [False, True],
            [{}, {"site": "north"}, {"site": "south", "line": 3}, {"site": "north", "line": 3.0}],
        )
    ):
        twin = Twin(
            f"dev-{i}",
            device_type=device_type,
            tags=tags,
            model=ThresholdModel(),
            now=T0,
        )
        if online or anomalous:
            twin.apply_message("telemetry", {"t": 99.0 if anomalous else 1.0}, now=T0)
        if not online:
            twin.mark_offline(now=T0 + 1)
        twins.append(twin)
    return twins


@pytest.mark.parametrize(
    ("old", "text"),
    [
        (TwinFilter(), ""),
        (TwinFilter(online=True), "online"),
        (TwinFilter(online=False), "not online"),
        (TwinFilter(anomalous=True, online=False), "anomalous and not online"),
        (TwinFilter(tags={"site": "north"}), "tags.site == 'north'"),
        (TwinFilter(tags={"site": "north", "line": 3}), "tags.site == 'north' and tags.line == 3"),
        (
            TwinFilter(type="smart-meter", online=True),
            "(type == 'smart-meter' or type startswith 'smart-meter.') and online",
        ),
    ],
)
def test_agrees_with_twin_filter(old: TwinFilter, text: str) -> None:
    flt = parse_filter(text)
    twins = fleet()

    assert [flt.matches(t.document()) for t in twins] == [old.matches(t) for t in twins]
    assert [flt.matches_snapshot(t.snapshot()) for t in twins] == [
        old.matches_snapshot(t.snapshot()) for t in twins
    ]
    assert any(old.matches(t) for t in twins)


# Few keys and values, so that random filters often read what random twins hold.
KEYS = st.sampled_from(["a", "b", "temp", "odd key"])
VALUES = st.sampled_from([0, 1, 1.0, 2.5, -3, 40, True, False, "a", "plant-a", "", "1.2.0"])
JSON = st.recursive(
    VALUES | st.lists(VALUES, max_size=3),
    lambda children: st.dictionaries(KEYS, children, max_size=3),
    max_leaves=6,
)
PATCHES = st.dictionaries(KEYS, JSON | st.none(), max_size=3)
FIRMWARE = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from(["1.2.0", "1.3.0"]),
        "status": st.sampled_from(["installing", "failed", "done"]),
    },
)
OPERATIONS = st.lists(
    st.tuples(st.just("telemetry"), st.dictionaries(KEYS, JSON, max_size=3))
    | st.tuples(st.just("reported"), PATCHES)
    | st.tuples(st.just("desired"), PATCHES)
    | st.tuples(
        st.just("tags"), st.dictionaries(KEYS | st.just("site"), JSON | st.none(), max_size=3)
    )
    | st.tuples(st.just("reported_firmware"), FIRMWARE)
    | st.tuples(st.just("desired_firmware"), FIRMWARE)
    | st.tuples(st.just("offline"), st.none())
    | st.tuples(st.just("model"), st.booleans()),
    max_size=8,
)


@st.composite
def twins(draw: st.DrawFn) -> Twin:
    twin = Twin(
        draw(st.sampled_from(["pump-1", "pump-2"])),
        device_type=draw(st.sampled_from([None, "plc", "smart-meter.water"])),
        tags=draw(st.dictionaries(st.just("site") | KEYS, VALUES, max_size=2)),
        now=T0,
    )
    for i, (kind, arg) in enumerate(draw(OPERATIONS), 1):
        now = T0 + i
        if kind in ("telemetry", "reported"):
            twin.apply_message(kind, arg, now=now, protocol="mqtt" if i % 2 else "coap")
        elif kind == "desired":
            twin.patch_desired(arg, now=now)
        elif kind == "tags":
            twin.patch_tags(arg, now=now)
        elif kind == "reported_firmware":
            twin.apply_message("reported", {"firmware": arg}, now=now)
        elif kind == "desired_firmware":
            twin.patch_desired({"firmware": arg}, now=now)
        elif kind == "offline":
            twin.mark_offline(now=now)
        else:
            twin.set_model(ThresholdModel() if arg else None, now=now)
    return twin


@PROPERTY_SETTINGS
@given(
    twin=twins(),
    flts=st.lists(
        expressions(KEYS | st.sampled_from(["firmware", "version", "site"]), VALUES | st.none()),
        min_size=1,
        max_size=10,
    ),
)
def test_random_filters_agree_on_every_form_of_random_twins(
    twin: Twin, flts: list[Expression]
) -> None:
    for expression in flts:
        assert len(every_form(Filter(expression), twin)) == 1, str(expression)


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("reported.temp >> 3", 14, "'>>' is not an operator"),
        ("reported.temp >", 15, "expected a number, string, true, false or null after '>'"),
        ("reported.temp > 30 and", 22, "expected a field"),
        ("(online", 7, "expected ')' to close the '(' at offset 0"),
        ("online)", 6, "this ')' closes nothing"),
        ("foo.bar == 1", 0, "unknown field 'foo'"),
        ("connectivity.speed == 1", 13, "connectivity has the fields online, last_seen"),
        ("connectivity == 1", 12, "connectivity has the fields"),
        ('tags.site == "plant', 13, "this string is not closed"),
        ('tags.site == "a\\q"', 15, "unknown escape '\\q'"),
        ('tags.site == "a\\', 13, "this string is not closed"),
        ('reported.x == "\\u12"', 15, "'\\u' needs four hex digits"),
        ("reported.x in [1, 2", 19, "expected ',' or ']'"),
        ("reported.x in [1, 2,]", 20, "expected a number"),
        ("reported.x in 3", 14, "expected a list such as [1, 2] after 'in'"),
        ("reported.x in [[1]]", 15, "expected a number"),
        ("reported.x == [1]", 14, "expected a number"),
        ("reported.x = 3", 11, "'=' is not an operator"),
        ("reported.x ! 3", 11, "'!' is not an operator"),
        ("reported.x > 30abc", 13, "malformed number"),
        ("reported.x == 1.", 14, "malformed number"),
        ("reported.x == 1.2.3", 14, "malformed number"),
        ("reported.x == -", 14, "unexpected character '-'"),
        ("reported.x > 1e999", 13, "this number is too large"),
        ("reported.`x > 1", 9, "this quoted key is not closed"),
        ("reported.`` == 1", 9, "a key must be a non-empty string"),
        ("reported. > 1", 9, "expected a key after '.'"),
        ("reported.é == 1", 9, "expected a key after '.'"),
        ("`x` == 1", 0, "a quoted key goes after a field and a dot"),
        ("reported.x startswith 3", 22, "startswith takes a string"),
        ("reported.x contains", 19, "expected a number"),
        ("and online", 0, "expected a field such as reported.temperature, found 'and'"),
        ("30 < reported.x", 0, "expected a field"),
        ("exists", 6, "expected a field"),
        ("not", 3, "expected a field"),
        ("type.x == 1", 5, "type has no fields"),
        ("reported == 1", 8, "reported needs a key, as in reported.temperature"),
        ("tags", 4, "tags needs a key, as in tags.site"),
        ("online.x", 7, "online has no fields"),
        ("anomaly.score.x > 1", 14, "anomaly.score has no fields"),
        ("reported.x > 1 reported.y > 2", 15, "expected 'and', 'or' or the end"),
        ("reported.x & 1", 11, "unexpected character '&'"),
        ("reported.x not 3", 15, "expected 'in' or 'exists'"),
        ('reported.x "a"', 11, "expected an operator (==, !=, <, <=, >, >=, in, exists"),
        ("online true", 7, "expected an operator"),
        ("() ", 1, "expected a field"),
        ("online and or anomalous", 11, "expected a field"),
        ("online AND anomalous", 7, "expected an operator"),
    ],
)
def test_errors_name_the_position_and_show_a_caret(text: str, position: int, fragment: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_filter(text)

    err = caught.value
    assert err.position == position
    assert err.code == "invalid_filter"
    assert err.field == "filter"
    assert fragment in err.message
    headline, line, caret = err.message.split("\n")
    assert headline.endswith(f" at offset {position}")
    assert line == text
    assert caret == " " * position + "^"


def test_error_message_reads_as_documented() -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_filter("reported.temp >> 3")

    assert caught.value.message == (
        "'>>' is not an operator (use ==, !=, <, <=, >, >= or not) at offset 14\n"
        "reported.temp >> 3\n"
        "              ^"
    )
    assert caught.value.to_dict() == {
        "code": "invalid_filter",
        "message": caught.value.message,
        "field": "filter",
    }


def test_error_in_a_later_line_shows_that_line() -> None:
    text = "online and\n\treported.x >> 1"

    with pytest.raises(InvalidFilter) as caught:
        parse_filter(text)

    assert caught.value.position == 23
    assert caught.value.message.split("\n")[1:] == [" reported.x >> 1", "            ^"]


def test_error_in_a_long_line_shows_the_part_around_it() -> None:
    text = "reported.x == 1 and " * 20 + "reported.y >> 2 and reported.z == 3" * 3

    with pytest.raises(InvalidFilter) as caught:
        parse_filter(text)

    _, line, caret = caught.value.message.split("\n")
    assert line.startswith("...")
    assert line.endswith("...")
    assert len(line) < 100
    assert line[caret.index("^") :].startswith(">> 2")


def test_invalid_filter_pickles_with_its_position() -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_filter("online)")

    back = pickle.loads(pickle.dumps(caught.value))

    assert type(back) is InvalidFilter
    assert back.position == 6
    assert back.to_dict() == caught.value.to_dict()


# -- limits -------------------------------------------------------------------------------------


def test_length_limit() -> None:
    at_limit = "online" + " " * (MAX_FILTER_LENGTH - len("online"))
    assert parse_filter(at_limit) == parse_filter("online")

    with pytest.raises(InvalidFilter, match="at most 2000 characters") as caught:
        parse_filter(at_limit + " ")
    assert caught.value.position == MAX_FILTER_LENGTH


def test_nesting_limit_counts_parentheses_and_nots() -> None:
    deepest = "(" * MAX_FILTER_DEPTH + "online" + ")" * MAX_FILTER_DEPTH
    assert parse_filter(deepest) == parse_filter("online")
    nots = "not " * MAX_FILTER_DEPTH + "online"
    assert str(parse_filter(str(parse_filter(nots)))) == str(parse_filter(nots))
    mixed = "not (" * (MAX_FILTER_DEPTH // 2) + "online" + ")" * (MAX_FILTER_DEPTH // 2)
    assert parse_filter(mixed).matches({"connectivity": {"online": True}})

    for text, position in [
        ("(" * 33 + "online" + ")" * 33, 32),
        ("not " * 33 + "online", 128),
        ("not (" * 16 + "not online" + ")" * 16, 80),
    ]:
        with pytest.raises(InvalidFilter, match="nests deeper than 32 levels") as caught:
            parse_filter(text)
        assert caught.value.position == position


def test_flat_chains_are_not_nesting() -> None:
    text = " and ".join(f"tags.k{i} == {i}" for i in range(100))

    flt = parse_filter(text)

    assert isinstance(flt.expression, Conjunction)
    assert len(flt.expression.operands) == 100


def test_list_limit() -> None:
    items = ", ".join(str(i) for i in range(MAX_FILTER_LIST))
    assert parse_filter(f"reported.x in [{items}]").matches({"reported": {"x": 99}})

    text = f"reported.x in [{items}, 100]"
    with pytest.raises(InvalidFilter, match="at most 100 values") as caught:
        parse_filter(text)
    assert caught.value.position == text.index("100]")


# -- value objects ------------------------------------------------------------------------------


def test_filters_pickle_hash_and_compare_by_value() -> None:
    text = "reported.`a b` > 30 and tags.site in ['x', 1, true, null] or not exists delta.k"
    flt = parse_filter(text)

    back = pickle.loads(pickle.dumps(flt))

    assert back == flt
    assert hash(back) == hash(flt)
    assert {flt: 1}[parse_filter(str(flt))] == 1
    assert back.matches(plant_twin().document()) == flt.matches(plant_twin().document())


def test_filters_are_frozen() -> None:
    flt = parse_filter("online")

    with pytest.raises(AttributeError):
        flt.expression = None


@pytest.mark.parametrize(
    "build",
    [
        lambda: FieldPath("foo"),
        lambda: FieldPath("reported"),
        lambda: FieldPath("reported", ("",)),
        lambda: FieldPath("type", ("x",)),
        lambda: FieldPath("connectivity", ("speed",)),
        lambda: Comparison(path("reported.x"), "~", 1),
        lambda: Comparison(path("reported.x"), "startswith", 1),
        lambda: Comparison(path("reported.x"), "==", float("nan")),
        lambda: Comparison(path("reported.x"), "==", [1]),
        lambda: Membership(path("reported.x"), tuple(range(MAX_FILTER_LIST + 1))),
        lambda: Membership(path("reported.x"), ({},)),
        lambda: Conjunction((ONLINE,)),
        lambda: Disjunction(()),
    ],
)
def test_value_objects_check_themselves(build: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # each builder fails in its own words
        build()


def test_nested_conjunctions_are_flattened() -> None:
    assert Conjunction((Conjunction((A, B)), C)).operands == (A, B, C)
    assert Disjunction((A, Disjunction((B, C)))).operands == (A, B, C)
    assert Conjunction((Disjunction((A, B)), C)).operands == (Disjunction((A, B)), C)
