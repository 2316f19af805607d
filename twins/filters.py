"""The filter language of the twin API: parse a filter once, test it against many twins.

A filter reads like ``reported.temperature > 30 and tags.site == "plant-a"``. Grammar (EBNF;
keywords are lowercase; whitespace separates tokens and is otherwise ignored)::

    filter      = [ disjunction ] ;                  (* empty: every twin matches *)
    disjunction = conjunction { "or" conjunction } ;
    conjunction = negation { "and" negation } ;
    negation    = "not" negation | primary ;
    primary     = "(" disjunction ")" | "exists" path | path [ predicate ] ;
    predicate   = ( "==" | "!=" | "<" | "<=" | ">" | ">=" ) scalar
                | [ "not" ] "in" list | [ "not" ] "exists"
                | "startswith" string | "contains" scalar ;
    list        = "[" [ scalar { "," scalar } ] "]" ;
    scalar      = number | string | "true" | "false" | "null" ;
    path        = name { "." key } ;                 (* no spaces inside a path *)
    name        = ( letter | "_" ) { letter | digit | "_" } ;
    key         = { letter | digit | "_" | "-" | ":" }-
                | "`" { character other than "`" | "``" } "`" ;
    number      = [ "-" ] digits [ "." digits ] [ ( "e" | "E" ) [ "+" | "-" ] digits ] ;
    string      = '"' ... '"' | "'" ... "'" ;        (* JSON backslash escapes, and \\' *)
    letter      = "A" ... "Z" | "a" ... "z" ;

Paths name places in the twin document (``Twin.document()``): ``id``, ``type``, ``version``;
``tags.K...``, ``reported.K...``, ``desired.K...``, ``delta.K...`` (one key or more);
``connectivity.online|last_seen|protocol``, ``firmware.current|target|status``,
``anomaly.model|score|anomalous|since``, ``metadata.created|updated``; and the shorthands
``online`` (``connectivity.online``) and ``anomalous`` (``anomaly.anomalous``). A key with
other characters than ASCII letters, digits, ``_``, ``-`` and ``:`` goes in backticks, with a
backtick in it doubled: ``reported.`flow rate` ``. Keys never index arrays.

Semantics, chosen so that no filter fails on any twin:

- A path that leads nowhere (a missing key, or a key below a non-object) is *missing*.
- ``==`` and ``!=`` are JSON equality (``1 == 1.0``, but ``true`` is not ``1``). ``a != v`` is
  exactly ``not a == v``, so it is true when ``a`` is missing.
- Every other test is false on a missing path: ``< <= > >=``, ``in``, ``startswith``,
  ``contains`` and a bare path, which means ``== true`` (``online and not anomalous``).
- ``< <= > >=`` compare numbers with numbers and strings with strings (by code point); any
  other pair is false, not an error.
- ``startswith`` takes a string and is true on string values only; ``contains`` is a
  substring test on strings and a membership test on arrays (``tags.zones contains "north"``).
- ``in [a, b]`` is ``== a or == b``; ``x not in [...]`` and ``x not exists`` negate the
  whole test, like a ``not`` in front.
- ``exists p`` is true when ``p`` is present, whatever its value, null included. The fixed
  fields (``connectivity.last_seen``, ``anomaly.since``...) are always present, maybe null:
  test them with ``== null``. Objects in reported, desired and tags never hold null (a merge
  patch's null deletes), so there ``not exists`` is the test for "absent".
- ``type == "smart-meter"`` is exact; ``type startswith "smart-meter."`` finds its subtypes.

``str(filter)`` is a normalized form that parses back to an equal filter: full paths (no
shorthands), ``== true`` spelled out, ``exists p`` in front, ``x not in`` as ``not x in``,
strings in double quotes, backticks and parentheses only where needed.

A filter that does not parse raises :class:`InvalidFilter` naming the offset of the first
problem and quoting its line with a caret; so does one over ``MAX_FILTER_LENGTH`` characters,
``MAX_FILTER_DEPTH`` nested parentheses and ``not``, or ``MAX_FILTER_LIST`` values in a list.
A parsed :class:`Filter` reads a twin document, a snapshot or a live twin through one reader
function each, and gives the same answer on all three.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeAlias

from twinfleet.errors import InvalidFilter

from . import snapshot as snapshots
from .merge import delta, same
from .twin import Twin

__all__ = [
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_LENGTH",
    "MAX_FILTER_LIST",
    "Comparison",
    "Conjunction",
    "Disjunction",
    "Existence",
    "Expression",
    "FieldPath",
    "Filter",
    "Membership",
    "Negation",
    "Scalar",
    "parse_filter",
]

MAX_FILTER_LENGTH = 2000
"""Characters in a filter expression."""
MAX_FILTER_DEPTH = 32
"""Parentheses and prefix ``not`` nested in one another."""
MAX_FILTER_LIST = 100
"""Values in one ``in [...]`` list."""

Scalar: TypeAlias = str | int | float | bool | None


class _Missing:
    """What a path that leads nowhere reads as."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()

# -- paths ------------------------------------------------------------------------------------

_FREE_SECTIONS = ("tags", "reported", "desired", "delta")
_FIXED_SECTIONS: dict[str, tuple[str, ...]] = {
    "connectivity": ("online", "last_seen", "protocol"),
    "firmware": ("current", "target", "status"),
    "anomaly": ("model", "score", "anomalous", "since"),
    "metadata": ("created", "updated"),
}
_SCALAR_SECTIONS = ("id", "type", "version")
_SHORTHANDS = {"online": ("connectivity", "online"), "anomalous": ("anomaly", "anomalous")}
_BARE_KEY = re.compile(r"[A-Za-z0-9_:-]+")


def _path_problem(section: str, keys: tuple[str, ...]) -> tuple[str, int] | None:
    """What is wrong with a path, and the part to blame (0 the section, i the i-th key)."""
    if section in _SCALAR_SECTIONS:
        return (f"{section} has no fields", 1) if keys else None
    if section in _FREE_SECTIONS:
        if not keys:
            example = "site" if section == "tags" else "temperature"
            return f"{section} needs a key, as in {section}.{example}", 1
        for i, key in enumerate(keys, 1):
            if not isinstance(key, str) or not key:
                return "a key must be a non-empty string", i
        return None
    allowed = _FIXED_SECTIONS.get(section)
    if allowed is None:
        known = ", ".join([*_SCALAR_SECTIONS, *_FREE_SECTIONS, *_FIXED_SECTIONS, *_SHORTHANDS])
        return f"unknown field {section!r}; a filter can read {known}", 0
    if not keys or keys[0] not in allowed:
        return f"{section} has the fields {', '.join(allowed)}", 1
    if len(keys) > 1:
        return f"{section}.{keys[0]} has no fields", 2
    return None


def _quote_key(key: str) -> str:
    if _BARE_KEY.fullmatch(key):
        return key
    return "`" + key.replace("`", "``") + "`"


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A place in the twin document: a section and the keys below it (``reported.a.b``)."""

    section: str
    keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))
        problem = _path_problem(self.section, self.keys)
        if problem is not None:
            raise ValueError(problem[0])

    def __str__(self) -> str:
        return self.section + "".join(["." + _quote_key(key) for key in self.keys])


# -- reading a path, one reader per form of twin ----------------------------------------------

_Reader = Callable[[Any, FieldPath], Any]


def _walk(value: Any, keys: tuple[str, ...]) -> Any:
    """The value at ``keys`` below ``value``, through objects only."""
    for key in keys:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(key, _MISSING)
    return value


def _delta_value(desired: Any, reported: Any, keys: tuple[str, ...]) -> Any:
    """The value at ``keys`` in ``delta(desired, reported)``, without computing all of it."""
    want, have = desired, reported
    last = len(keys) - 1
    for i, key in enumerate(keys):
        if not isinstance(want, dict):
            return _MISSING
        want_value = want.get(key, _MISSING)
        if want_value is _MISSING:
            return _MISSING
        have_value = have.get(key, _MISSING)
        if isinstance(want_value, dict):
            if not isinstance(have_value, dict):
                return _walk(want_value, keys[i + 1 :])  # the delta holds all of it
            if i == last:
                return delta(want_value, have_value) or _MISSING
            want, have = want_value, have_value
        elif have_value is not _MISSING and same(want_value, have_value):
            return _MISSING
        else:
            return want_value if i == last else _MISSING
    return _MISSING


def _document_value(doc: Mapping[str, Any], path: FieldPath) -> Any:
    """Read ``path`` from a twin document, as ``Twin.document()`` returns it."""
    return _walk(doc.get(path.section, _MISSING), path.keys)


_SNAPSHOT_OBJECTS: dict[str, Callable[[snapshots.Snapshot], dict[str, Any]]] = {
    "reported": snapshots.reported,
    "tags": snapshots.tags,
    "desired": snapshots.desired,
}


def _snapshot_value(snap: snapshots.Snapshot, path: FieldPath) -> Any:
    """Read ``path`` from a twin snapshot, as ``Twin.snapshot()`` returns it.

    Through the accessors of ``snapshot.py``, which ``Twin.from_snapshot`` uses too, so a
    snapshot reads as the twin it brings back.
    """
    section = path.section
    objects = _SNAPSHOT_OBJECTS.get(section)
    if objects is not None:
        return _walk(objects(snap), path.keys)
    if section == "delta":
        return _delta_value(snapshots.desired(snap), snapshots.reported(snap), path.keys)
    if section == "type":
        return snapshots.twin_type(snap)
    # id and version are required, yet a filter never fails: a snapshot without reads missing.
    if section == "id":
        return snap.get(snapshots.ID, _MISSING)
    if section == "version":
        return snap.get(snapshots.VERSION, _MISSING)
    return snapshots.FIXED_FIELDS[f"{section}.{path.keys[0]}"](snap)


_TWIN_FIELDS: dict[str, Callable[[Twin], Any]] = {
    "connectivity.online": lambda twin: twin.online,
    "connectivity.last_seen": lambda twin: twin.last_seen,
    "connectivity.protocol": lambda twin: twin.protocol,
    "firmware.current": lambda twin: twin.firmware()["current"],
    "firmware.target": lambda twin: twin.firmware()["target"],
    "firmware.status": lambda twin: twin.firmware()["status"],
    "anomaly.model": lambda twin: twin.model.name if twin.model is not None else None,
    "anomaly.score": lambda twin: twin.anomaly_score,
    "anomaly.anomalous": lambda twin: twin.anomalous,
    "anomaly.since": lambda twin: twin.anomaly_since,
    "metadata.created": lambda twin: twin.created,
    "metadata.updated": lambda twin: twin.updated,
}


def _twin_value(twin: Twin, path: FieldPath) -> Any:
    """Read ``path`` from a live twin, as its document would show it."""
    section = path.section
    if section == "reported":
        return _walk(twin.reported, path.keys)
    if section == "tags":
        return _walk(twin.tags, path.keys)
    if section == "desired":
        return _walk(twin.desired, path.keys)
    if section == "delta":
        return _delta_value(twin.desired, twin.reported, path.keys)
    if section == "id":
        return twin.id
    if section == "type":
        return twin.type
    if section == "version":
        return twin.version
    return _TWIN_FIELDS[f"{section}.{path.keys[0]}"](twin)


# -- expressions ------------------------------------------------------------------------------


def _kind_of(value: object) -> str:
    """The JSON kind of a literal; it keeps ``true`` and ``1`` apart in equality and hashes."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "number"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return "number"
    if isinstance(value, str):
        return "string"
    raise ValueError(f"a filter literal is a string, number, bool or None, not {value!r}")


def _literal(value: Scalar) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


_NUMBERS = (int, float)


def _ordered(have: Any, want: Any) -> bool:
    """Whether ``have`` and ``want`` can be ordered: two numbers or two strings."""
    if type(have) is str:
        return type(want) is str
    return type(have) in _NUMBERS and type(want) in _NUMBERS


def _contains(have: Any, want: Any) -> bool:
    if type(have) is str:
        return type(want) is str and want in have
    if isinstance(have, list):
        return any(same(item, want) for item in have)
    return False


_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "==": same,
    "!=": lambda have, want: not same(have, want),
    "<": lambda have, want: _ordered(have, want) and have < want,
    "<=": lambda have, want: _ordered(have, want) and have <= want,
    ">": lambda have, want: _ordered(have, want) and have > want,
    ">=": lambda have, want: _ordered(have, want) and have >= want,
    "startswith": lambda have, want: type(have) is str and have.startswith(want),
    "contains": _contains,
}


@dataclass(frozen=True, slots=True)
class Comparison:
    """``path op value``, op one of ``== != < <= > >=``, ``startswith`` and ``contains``."""

    path: FieldPath
    op: str
    value: Scalar
    _kind: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in _TESTS:
            raise ValueError(f"unknown operator {self.op!r}")
        if self.op == "startswith" and not isinstance(self.value, str):
            raise ValueError("startswith takes a string")
        object.__setattr__(self, "_kind", _kind_of(self.value))

    def holds(self, twin: Any, read: _Reader) -> bool:
        """Whether the twin that ``read`` reads passes this test."""
        have = read(twin, self.path)
        if have is _MISSING:
            return self.op == "!="
        return _TESTS[self.op](have, self.value)

    def __str__(self) -> str:
        return f"{self.path} {self.op} {_literal(self.value)}"


@dataclass(frozen=True, slots=True)
class Membership:
    """``path in [v, ...]``: the value equals one of the listed values."""

    path: FieldPath
    values: tuple[Scalar, ...]
    _kinds: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        values = tuple(self.values)
        if len(values) > MAX_FILTER_LIST:
            raise ValueError(f"a list holds at most {MAX_FILTER_LIST} values")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "_kinds", tuple(_kind_of(v) for v in values))

    def holds(self, twin: Any, read: _Reader) -> bool:
        """Whether the twin that ``read`` reads passes this test."""
        have = read(twin, self.path)
        if have is _MISSING:
            return False
        return any(same(have, want) for want in self.values)

    def __str__(self) -> str:
        return f"{self.path} in [{', '.join(_literal(v) for v in self.values)}]"


@dataclass(frozen=True, slots=True)
class Existence:
    """``exists path``: the path is present, whatever its value."""

    path: FieldPath

    def holds(self, twin: Any, read: _Reader) -> bool:
        """Whether the twin that ``read`` reads passes this test."""
        return read(twin, self.path) is not _MISSING

    def __str__(self) -> str:
        return f"exists {self.path}"


@dataclass(frozen=True, slots=True)
class Negation:
    """``not operand``."""

    operand: Expression

    def holds(self, twin: Any, read: _Reader) -> bool:
        """Whether the twin that ``read`` reads passes this test."""
        return not self.operand.holds(twin, read)

    def __str__(self) -> str:
        if isinstance(self.operand, Conjunction | Disjunction):
            return f"not ({self.operand})"
        return f"not {self.operand}"


def _flatten(kind: type[Conjunction | Disjunction], operands: tuple[Expression, ...]) -> Any:
    """``operands`` with nested ones of the same ``kind`` spliced in: one normal form."""
    flat: list[Expression] = []
    for operand in operands:
        if type(operand) is kind:
            flat.extend(operand.operands)
        else:
            flat.append(operand)
    if len(flat) < 2:
        raise ValueError(f"{kind.__name__} needs two operands or more")
    return tuple(flat)


@dataclass(frozen=True, slots=True)
class Conjunction:
    """``a and b and ...``: every operand holds."""

    operands: tuple[Expression, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "operands", _flatten(Conjunction, tuple(self.operands)))

    def holds(self, twin: Any, read: _Reader) -> bool:
        """Whether the twin that ``read`` reads passes this test."""
        return all(operand.holds(twin, read) for operand in self.operands)

    def __str__(self) -> str:
        return " and ".join(
            f"({operand})" if isinstance(operand, Disjunction) else str(operand)
            for operand in self.operands
        )


@dataclass(frozen=True, slots=True)
class Disjunction:
    """``a or b or ...``: some operand holds."""

    operands: tuple[Expression, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "operands", _flatten(Disjunction, tuple(self.operands)))

    def holds(self, twin: Any, read: _Reader) -> bool:
        """Whether the twin that ``read`` reads passes this test."""
        return any(operand.holds(twin, read) for operand in self.operands)

    def __str__(self) -> str:
        return " or ".join(str(operand) for operand in self.operands)


Expression: TypeAlias = Comparison | Membership | Existence | Negation | Conjunction | Disjunction


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed filter, tested against twin documents, snapshots or live twins.

    Frozen, hashable and picklable: it crosses Ray process boundaries. ``str()`` gives the
    normalized form, which parses back to an equal filter. No expression matches every twin.
    """

    expression: Expression | None = None

    def matches(self, doc: Mapping[str, Any]) -> bool:
        """Whether the twin document ``doc`` (as ``Twin.document()`` returns it) passes."""
        return self.expression is None or self.expression.holds(doc, _document_value)

    def matches_snapshot(self, snap: Mapping[str, Any]) -> bool:
        """Whether the twin saved as ``snap`` (as ``Twin.snapshot()`` returns it) passes."""
        return self.expression is None or self.expression.holds(snap, _snapshot_value)

    def matches_twin(self, twin: Twin) -> bool:
        """Whether the live ``twin`` passes, without building its document."""
        return self.expression is None or self.expression.holds(twin, _twin_value)

    def __str__(self) -> str:
        return "" if self.expression is None else str(self.expression)

    def __repr__(self) -> str:
        return f"parse_filter({str(self)!r})"


# -- parsing ----------------------------------------------------------------------------------


class _Token(NamedTuple):
    kind: str  # path, keyword, number, string, op or end
    value: Any  # a path's segments, a keyword, a literal's value or an operator
    start: int
    end: int
    offsets: tuple[int, ...] = ()  # where each segment of a path starts


_KEYWORDS = frozenset(
    {"and", "or", "not", "in", "exists", "startswith", "contains", "true", "false", "null"}
)
_CONSTANTS: dict[str, Scalar] = {"true": True, "false": False, "null": None}
_COMPARE_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_NON_SPACE = re.compile(r"\S")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_OPERATOR = re.compile(r"[<>=!]+")
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_STRING_STOP = {'"': re.compile(r'["\\]'), "'": re.compile(r"['\\]")}
_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_CONTEXT = 40  # characters either side of the error that its message quotes


def _error(text: str, message: str, position: int) -> InvalidFilter:
    """``message`` at ``position`` of ``text``, with the line and a caret under the spot."""
    line_start = text.rfind("\n", 0, position) + 1
    line_end = text.find("\n", position)
    if line_end < 0:
        line_end = len(text)
    left = max(line_start, position - _CONTEXT)
    right = min(line_end, position + _CONTEXT)
    prefix = "..." if left > line_start else ""
    suffix = "..." if right < line_end else ""
    line = re.sub(r"\s", " ", text[left:right])  # a tab or CR would move the caret
    caret = " " * (len(prefix) + position - left) + "^"
    return InvalidFilter(
        f"{message} at offset {position}\n{prefix}{line}{suffix}\n{caret}", position=position
    )


def _read_string(text: str, start: int) -> tuple[str, int]:
    """The string literal opening at ``start`` and the offset after it."""
    stop = _STRING_STOP[text[start]]
    parts: list[str] = []
    pos = start + 1
    while True:
        found = stop.search(text, pos)
        if found is None:
            raise _error(text, "this string is not closed", start)
        end = found.start()
        parts.append(text[pos:end])
        if text[end] == text[start]:
            return "".join(parts), end + 1
        escape = text[end + 1 : end + 2]
        if escape == "u":
            char, pos = _read_unicode_escape(text, end)
            parts.append(char)
        elif escape in _ESCAPES:
            parts.append(_ESCAPES[escape])
            pos = end + 2
        elif not escape:
            raise _error(text, "this string is not closed", start)
        else:
            raise _error(text, f"unknown escape '\\{escape}' in a string", end)


def _read_unicode_escape(text: str, start: int) -> tuple[str, int]:
    """The character of the ``\\uXXXX`` escape at ``start`` (a surrogate pair joined)."""
    if not _HEX4.match(text, start + 2):
        raise _error(text, "'\\u' needs four hex digits", start)
    code = int(text[start + 2 : start + 6], 16)
    end = start + 6
    if 0xD800 <= code < 0xDC00 and text.startswith("\\u", end) and _HEX4.match(text, end + 2):
        low = int(text[end + 2 : end + 6], 16)
        if 0xDC00 <= low < 0xE000:
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), end + 6
    return chr(code), end


def _read_quoted_key(text: str, start: int) -> tuple[str, int]:
    """The backtick-quoted key opening at ``start`` and the offset after it."""
    parts: list[str] = []
    pos = start + 1
    while True:
        close = text.find("`", pos)
        if close < 0:
            raise _error(text, "this quoted key is not closed", start)
        parts.append(text[pos:close])
        if text.startswith("``", close):
            parts.append("`")
            pos = close + 2
        else:
            return "".join(parts), close + 1


def _read_path(text: str, name: re.Match[str]) -> _Token:
    """The path (or keyword) that begins with the name ``name`` matched."""
    start, end = name.span()
    segments = [name.group()]
    offsets = [start]
    while text.startswith(".", end):
        end += 1
        offsets.append(end)
        if text.startswith("`", end):
            key, end = _read_quoted_key(text, end)
        else:
            bare = _BARE_KEY.match(text, end)
            if bare is None:
                raise _error(text, "expected a key after '.' (odd keys go in `backticks`)", end)
            key, end = bare.group(), bare.end()
        segments.append(key)
    if len(segments) == 1 and segments[0] in _KEYWORDS:
        return _Token("keyword", segments[0], start, end)
    return _Token("path", tuple(segments), start, end, tuple(offsets))


def _read_number(text: str, number: re.Match[str]) -> _Token:
    """The number literal ``number`` matched."""
    start, end = number.span()
    if end < len(text) and (text[end].isalnum() or text[end] in "_.`"):
        raise _error(text, "malformed number", start)
    if number.group(1) is None and number.group(2) is None:
        return _Token("number", int(number.group()), start, end)
    value = float(number.group())
    if not math.isfinite(value):
        raise _error(text, "this number is too large", start)
    return _Token("number", value, start, end)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while (found := _NON_SPACE.search(text, pos)) is not None:
        pos = found.start()
        char = text[pos]
        if char in "()[],":
            tokens.append(_Token("op", char, pos, pos + 1))
        elif (op := _OPERATOR.match(text, pos)) is not None:
            if op.group() not in _COMPARE_OPS:
                raise _error(
                    text,
                    f"{op.group()!r} is not an operator (use ==, !=, <, <=, >, >= or not)",
                    pos,
                )
            tokens.append(_Token("op", op.group(), pos, op.end()))
        elif char in "\"'":
            value, end = _read_string(text, pos)
            tokens.append(_Token("string", value, pos, end))
        elif (number := _NUMBER.match(text, pos)) is not None:
            tokens.append(_read_number(text, number))
        elif (name := _NAME.match(text, pos)) is not None:
            tokens.append(_read_path(text, name))
        elif char == "`":
            raise _error(text, "a quoted key goes after a field and a dot", pos)
        else:
            raise _error(text, f"unexpected character {char!r}", pos)
        pos = tokens[-1].end
    tokens.append(_Token("end", None, len(text), len(text)))
    return tokens


class _Parser:
    """Recursive descent over the grammar in the module docstring, one token of lookahead."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    def parse(self) -> Expression | None:
        if self.peek().kind == "end":
            return None
        expression = self.disjunction()
        token = self.peek()
        if token.kind != "end":
            if token.value == ")":
                raise self.error("this ')' closes nothing", token.start)
            raise self.error(f"expected 'and', 'or' or the end, found {self.show(token)}", token)
        return expression

    # -- helpers ------------------------------------------------------------------------------

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def next(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, kind: str, value: str) -> bool:
        token = self.tokens[self.index]
        if token.kind == kind and token.value == value:
            self.index += 1
            return True
        return False

    def show(self, token: _Token) -> str:
        if token.kind == "end":
            return "the end of the filter"
        shown = self.text[token.start : token.end]
        return repr(shown if len(shown) <= 30 else shown[:27] + "...")

    def error(self, message: str, where: _Token | int) -> InvalidFilter:
        return _error(self.text, message, where if isinstance(where, int) else where.start)

    def enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_FILTER_DEPTH:
            raise self.error(f"the filter nests deeper than {MAX_FILTER_DEPTH} levels", token)

    # -- grammar ------------------------------------------------------------------------------

    def disjunction(self) -> Expression:
        operands = [self.conjunction()]
        while self.accept("keyword", "or"):
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else Disjunction(tuple(operands))

    def conjunction(self) -> Expression:
        operands = [self.negation()]
        while self.accept("keyword", "and"):
            operands.append(self.negation())
        return operands[0] if len(operands) == 1 else Conjunction(tuple(operands))

    def negation(self) -> Expression:
        token = self.peek()
        if token.kind == "keyword" and token.value == "not":
            self.enter(token)
            self.index += 1
            operand = self.negation()
            self.depth -= 1
            return Negation(operand)
        return self.primary()

    def primary(self) -> Expression:
        token = self.peek()
        if token.kind == "op" and token.value == "(":
            self.enter(token)
            self.index += 1
            expression = self.disjunction()
            closing = self.peek()
            if not self.accept("op", ")"):
                raise self.error(
                    f"expected ')' to close the '(' at offset {token.start}, "
                    f"found {self.show(closing)}",
                    closing,
                )
            self.depth -= 1
            return expression
        if self.accept("keyword", "exists"):
            return Existence(self.path())
        return self.predicate(self.path())

    def path(self) -> FieldPath:
        token = self.peek()
        if token.kind != "path":
            raise self.error(
                f"expected a field such as reported.temperature, found {self.show(token)}", token
            )
        self.index += 1
        head, keys = token.value[0], token.value[1:]
        if head in _SHORTHANDS:
            if keys:
                raise self.error(f"{head} has no fields", token.offsets[1])
            section, key = _SHORTHANDS[head]
            return FieldPath(section, (key,))
        problem = _path_problem(head, keys)
        if problem is not None:
            message, part = problem
            where = token.offsets[part] if part < len(token.offsets) else token.end
            raise self.error(message, where)
        return FieldPath(head, keys)

    def predicate(self, path: FieldPath) -> Expression:
        token = self.peek()
        kind, word = token.kind, token.value
        if kind == "op" and word in _COMPARE_OPS:
            self.index += 1
            return Comparison(path, word, self.scalar(token))
        if kind == "end" or (kind, word) in (("op", ")"), ("keyword", "and"), ("keyword", "or")):
            return Comparison(path, "==", True)  # a bare path means "is true"
        if kind != "keyword" or word not in ("in", "exists", "startswith", "contains", "not"):
            raise self.error(
                "expected an operator (==, !=, <, <=, >, >=, in, exists, startswith, contains), "
                f"'and', 'or' or the end after the field, found {self.show(token)}",
                token,
            )
        self.index += 1
        if word == "in":
            return Membership(path, self.values(token))
        if word == "exists":
            return Existence(path)
        if word == "not":
            after = self.next()
            if after.kind == "keyword" and after.value == "in":
                return Negation(Membership(path, self.values(after)))
            if after.kind == "keyword" and after.value == "exists":
                return Negation(Existence(path))
            raise self.error(f"expected 'in' or 'exists', found {self.show(after)}", after)
        value_token = self.peek()
        value = self.scalar(token)
        if word == "startswith" and not isinstance(value, str):
            raise self.error("startswith takes a string", value_token)
        return Comparison(path, word, value)

    def scalar(self, after: _Token) -> Scalar:
        token = self.peek()
        if token.kind in ("number", "string"):
            self.index += 1
            value: Scalar = token.value
            return value
        if token.kind == "keyword" and token.value in _CONSTANTS:
            self.index += 1
            return _CONSTANTS[token.value]
        raise self.error(
            f"expected a number, string, true, false or null after {self.show(after)}, "
            f"found {self.show(token)}",
            token,
        )

    def values(self, after: _Token) -> tuple[Scalar, ...]:
        opening = self.next()
        if opening.kind != "op" or opening.value != "[":
            raise self.error(
                f"expected a list such as [1, 2] after {self.show(after)}, "
                f"found {self.show(opening)}",
                opening,
            )
        values: list[Scalar] = []
        if self.accept("op", "]"):
            return ()
        while True:
            if len(values) == MAX_FILTER_LIST:
                raise self.error(f"a list holds at most {MAX_FILTER_LIST} values", self.peek())
            values.append(self.scalar(self.tokens[self.index - 1]))
            token = self.next()
            if token.kind == "op" and token.value == "]":
                return tuple(values)
            if token.kind != "op" or token.value != ",":
                raise self.error(f"expected ',' or ']', found {self.show(token)}", token)


def parse_filter(text: str) -> Filter:
    """Parse a filter expression; an empty or blank one matches every twin.

    Raises :class:`InvalidFilter` naming the offset of the first problem, with the line and
    a caret under it.
    """
    if len(text) > MAX_FILTER_LENGTH:
        raise _error(
            text,
            f"a filter has at most {MAX_FILTER_LENGTH} characters, this one {len(text)}",
            MAX_FILTER_LENGTH,
        )
    return Filter(_Parser(text).parse())
