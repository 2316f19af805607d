"""Device message bodies, decoded in one place for the MQTT gateway and the CoAP endpoint.

Every function here first refuses a body over ``MAX_PAYLOAD_BYTES`` (:class:`PayloadTooLarge`,
before any decoding), then turns every decoding failure into a typed twinfleet error with a
``field``: :class:`MalformedPayload` for bad JSON, CBOR or SenML and wrong shapes,
:class:`UnsupportedFormat` for a content format a body kind does not come in,
:class:`InvalidTimestamp` and :class:`InvalidDeviceId` for a bad ``ts`` or device id. Nothing
else escapes, whatever the bytes.

JSON is decoded by orjson (no NaN or Infinity) with integers beyond 64 bits refused (orjson
would quietly make them floats). CBOR is decoded by cbor2 after a walk over the item headers
that refuses tags, byte strings, ``undefined`` and other simple values, truncated items and
trailing bytes, so cbor2 only ever sees plain JSON-like data. The one exception is a SenML
``vd`` (data value): RFC 8428 section 6 sends it as a byte string in CBOR, and it becomes the
base64url text SenML JSON carries.

SenML (RFC 8428) decoding, in short:

- Base fields (``bn``, ``bt``, ``bv``, ``bs``) apply to their record and every later one until
  replaced; ``bu``, ``u`` and ``ut`` are read and ignored (units live in the device family).
- A record's time is ``bt + t``; below ``2**28`` it is relative to ``received`` (RFC 8428
  section 4.5.3: 2**28 itself is an absolute time).
- The metric name is ``n`` as sent; without ``n`` it is the last segment of ``bn`` after ``:``
  or ``/``. The device id never comes from SenML, only from the topic or URI.
- Exactly one of ``v`` (plus ``bv``), ``vs``, ``vb``, ``vd``, or a sum ``s`` (plus ``bs``),
  which becomes the metric ``<name>_sum``. A record with none, or with two value fields, is
  malformed, as is a field ending in ``_`` (RFC 8428 "must understand") or ``bver`` over 10.
- Records are grouped by resolved time: one telemetry :class:`DeviceMessage` per distinct time,
  with that time as its ``ts``; within one time a later record with the same name wins.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, Literal, TypedDict, get_args

import cbor2
import orjson

from twinfleet.runtime.messages import DeviceMessage
from twinfleet.twins import (
    MAX_PAYLOAD_BYTES,
    InvalidPatch,
    MalformedPayload,
    PayloadTooLarge,
    UnknownCommand,
    UnsupportedFormat,
    parse_timestamp,
    validate_device_id,
)
from twinfleet.twins.merge import INT_MAX, INT_MIN, validate_values

__all__ = [
    "CommandResponse",
    "ContentFormat",
    "TopicKind",
    "TopicMatch",
    "content_format",
    "decode_command_response",
    "decode_lorawan_uplink",
    "decode_reported",
    "decode_status",
    "decode_telemetry",
    "parse_topic",
]


class ContentFormat(IntEnum):
    """The CoAP content formats device bodies come in (their CoAP Content-Format numbers)."""

    JSON = 50
    CBOR = 60
    SENML_JSON = 110
    SENML_CBOR = 112


def content_format(number: int | None) -> ContentFormat | None:
    """The :class:`ContentFormat` of a CoAP Content-Format number; ``None`` stays ``None``.

    Raises :class:`UnsupportedFormat` for any other number.
    """
    if number is None:
        return None
    try:
        return ContentFormat(number)
    except ValueError:
        names = ", ".join(f"{fmt.value} ({fmt.name})" for fmt in ContentFormat)
        raise UnsupportedFormat(
            f"content format {number!r} is not one of {names}", field="content_format"
        ) from None


# -- telemetry and reported state ---------------------------------------------------------------


def decode_telemetry(
    body: bytes,
    device_id: str,
    *,
    fmt: ContentFormat | None = None,
    protocol: str,
    received: float,
) -> list[DeviceMessage]:
    """Decode a telemetry body into telemetry messages for ``device_id``.

    ``fmt=None`` (MQTT) sniffs JSON: an object is a measurements object, an array a SenML pack.
    With a CoAP content format, JSON and CBOR bodies must be an object and SenML ones an
    array. A measurements object gives one message and keeps its optional ``ts`` (Unix seconds
    or RFC 3339) in the payload for the twin, checked here; a SenML pack gives one message per
    distinct time. ``received`` (Unix seconds) is the "now" SenML relative times count from.
    """
    _check_size(body)
    fmt = _format(fmt)
    device_id = validate_device_id(device_id)
    if fmt is None:
        value = _load_json(body)
        if isinstance(value, dict):
            return [_measurements(value, device_id, protocol, received)]
        if isinstance(value, list):
            return _senml(value, device_id, protocol=protocol, received=received)
        raise MalformedPayload(
            f"a telemetry body must be a JSON object or a SenML array, not {_json_type(value)}",
            field="payload",
        )
    if fmt is ContentFormat.JSON or fmt is ContentFormat.CBOR:
        value = _load(body, fmt)
        if not isinstance(value, dict):
            raise MalformedPayload(
                f"a {fmt.name} telemetry body must be an object of measurements, not "
                f"{_json_type(value)} (send SenML as SENML_{fmt.name}, content format "
                f"{ContentFormat['SENML_' + fmt.name].value})",
                field="payload",
            )
        return [_measurements(value, device_id, protocol, received)]
    value = _load(body, fmt)
    if not isinstance(value, list):
        raise MalformedPayload(
            f"a SenML body must be an array of records, not {_json_type(value)}",
            field="payload",
        )
    return _senml(
        value, device_id, protocol=protocol, received=received, cbor=fmt is ContentFormat.SENML_CBOR
    )


def decode_reported(
    body: bytes,
    device_id: str,
    *,
    fmt: ContentFormat | None = None,
    protocol: str,
    received: float,
) -> DeviceMessage:
    """Decode a reported-state body (a JSON or CBOR object: a merge patch) for ``device_id``.

    An optional ``ts`` key stays in the patch for the twin and is checked here. ``received``
    (when the edge got it) travels with the message: presence is judged by it.
    """
    _check_size(body)
    fmt = _object_format(fmt, "reported state")
    device_id = validate_device_id(device_id)
    value = _load(body, fmt)
    if not isinstance(value, dict):
        raise MalformedPayload(
            f"a reported-state body must be an object (a merge patch), not {_json_type(value)}",
            field="payload",
        )
    _check_ts(value, "ts")
    return DeviceMessage(device_id, "reported", value, protocol=protocol, received=received)


def _measurements(
    payload: dict[str, Any], device_id: str, protocol: str, received: float
) -> DeviceMessage:
    _check_ts(payload, "ts")
    return DeviceMessage(device_id, "telemetry", payload, protocol=protocol, received=received)


def _check_ts(payload: dict[str, Any], field: str) -> None:
    if "ts" in payload:
        parse_timestamp(payload["ts"], field=field)


# -- SenML (RFC 8428) ---------------------------------------------------------------------------

# SenML CBOR labels (RFC 8428 section 6, table 4).
_SENML_LABELS: Final[dict[int, str]] = {
    -1: "bver",
    -2: "bn",
    -3: "bt",
    -4: "bu",
    -5: "bv",
    -6: "bs",
    0: "n",
    1: "u",
    2: "v",
    3: "vs",
    4: "vb",
    5: "s",
    6: "t",
    7: "ut",
    8: "vd",
}
_SENML_TEXT: Final = frozenset({"bn", "bu", "n", "u", "vs"})
_SENML_NUMBER: Final = frozenset({"bt", "bv", "bs", "v", "s", "t", "ut", "bver"})
_SENML_VALUES: Final = ("v", "vs", "vb", "vd")
_SENML_VERSION: Final = 10
_RELATIVE_BEFORE: Final = 2**28  # resolved times below this count from "now"
_NAME_SEGMENT = re.compile(r"[:/]")


def _senml(
    pack: list[Any],
    device_id: str,
    *,
    protocol: str,
    received: float,
    cbor: bool = False,
) -> list[DeviceMessage]:
    """Resolve a SenML pack and group its measurements by time."""
    if not pack:
        raise MalformedPayload("the SenML pack holds no records", field="payload")
    base_name = ""
    base_time: int | float = 0
    base_value: int | float = 0
    base_sum: int | float = 0
    groups: dict[float, dict[str, Any]] = {}
    for index, record in enumerate(pack):
        where = f"senml[{index}]"
        if not isinstance(record, dict):
            raise MalformedPayload(
                f"{where} must be an object, not {_json_type(record)}", field=where
            )
        fields = _senml_fields(record, where, cbor=cbor)
        if "bver" in fields and not (
            isinstance(fields["bver"], int) and 0 < fields["bver"] <= _SENML_VERSION
        ):
            raise MalformedPayload(
                f"{where}.bver is {fields['bver']!r}: only SenML versions 1 to "
                f"{_SENML_VERSION} are read",
                field=f"{where}.bver",
            )
        base_name = fields.get("bn", base_name)
        base_time = fields.get("bt", base_time)
        base_value = fields.get("bv", base_value)
        base_sum = fields.get("bs", base_sum)

        present = [key for key in _SENML_VALUES if key in fields]
        if len(present) > 1:
            raise MalformedPayload(
                f"{where} has more than one value field ({', '.join(present)})", field=where
            )
        if not present and "s" not in fields:
            raise MalformedPayload(
                f"{where} has no value: one of v, vs, vb, vd or s is required", field=where
            )

        name = fields.get("n")
        if name is None:
            name = _NAME_SEGMENT.split(base_name)[-1]
        if not name:
            raise MalformedPayload(
                f"{where} has no name: neither n nor a base name ending in one", field=where
            )
        if name == "ts":
            raise MalformedPayload(
                f"{where} is named 'ts', which is reserved for the measurement time",
                field=f"{where}.n",
            )

        moment = _finite(base_time + fields.get("t", 0), f"{where}.t")
        if moment < _RELATIVE_BEFORE:
            moment += received
        ts = parse_timestamp(moment, field=f"{where}.t")

        values = groups.setdefault(ts, {})
        if present:
            key = present[0]
            value = fields[key]
            if key == "v":
                value = _finite(base_value + value, f"{where}.v")
            values[name] = value
        if "s" in fields:
            values[f"{name}_sum"] = _finite(base_sum + fields["s"], f"{where}.s")
    return [
        DeviceMessage(device_id, "telemetry", values, ts=ts, protocol=protocol, received=received)
        for ts, values in groups.items()
    ]


def _senml_fields(record: dict[Any, Any], where: str, *, cbor: bool) -> dict[str, Any]:
    """The record's known fields by JSON name, type-checked; unknown fields are dropped."""
    fields: dict[str, Any] = {}
    for label, value in record.items():
        if isinstance(label, str):
            key = label
        elif cbor and type(label) is int:
            if label not in _SENML_LABELS:
                continue  # an extension we do not know and need not understand
            key = _SENML_LABELS[label]
        else:
            raise MalformedPayload(f"{where} has a key {label!r} that is not text", field=where)
        field = f"{where}.{key}"
        if key.endswith("_"):
            raise MalformedPayload(
                f"{where} has the must-understand field {key!r}, which twinfleet does not read",
                field=field,
            )
        if key in _SENML_TEXT:
            if not isinstance(value, str):
                raise MalformedPayload(
                    f"{field} must be text, not {_json_type(value)}", field=field
                )
            fields[key] = value
        elif key in _SENML_NUMBER:
            fields[key] = _number(value, field)
        elif key == "vb":
            if not isinstance(value, bool):
                raise MalformedPayload(
                    f"{field} must be true or false, not {_json_type(value)}", field=field
                )
            fields[key] = value
        elif key == "vd":
            if cbor and isinstance(value, bytes):
                fields[key] = base64.urlsafe_b64encode(value).rstrip(b"=").decode("ascii")
            elif isinstance(value, str):
                fields[key] = value
            else:
                raise MalformedPayload(
                    f"{field} must be base64url text, not {_json_type(value)}", field=field
                )
        # Any other field is an extension, which RFC 8428 lets a receiver ignore.
    return fields


def _number(value: Any, field: str) -> int | float:
    if type(value) is int:
        if not INT_MIN <= value <= INT_MAX:
            raise MalformedPayload(f"{field} is an integer beyond 64 bits", field=field)
        return value
    if type(value) is float:
        return _finite(value, field)
    raise MalformedPayload(f"{field} must be a number, not {_json_type(value)}", field=field)


def _finite(value: int | float, field: str) -> int | float:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MalformedPayload(f"{field} is {value}, not a finite number", field=field)
    elif not INT_MIN <= value <= INT_MAX:
        raise MalformedPayload(f"{field} is an integer beyond 64 bits", field=field)
    return value


# -- command responses --------------------------------------------------------------------------


class CommandResponse(TypedDict):
    """A device's answer to a command: ``result`` and ``error`` are ``None`` when not sent."""

    status: Literal["ok", "error"]
    result: Any
    error: Any


_RESPONSE_KEYS: Final = frozenset(CommandResponse.__annotations__)


def decode_command_response(body: bytes, *, fmt: ContentFormat | None = None) -> CommandResponse:
    """Decode a command response ``{"status": "ok"|"error", "result": ..., "error": ...}``.

    ``status`` is required; ``result`` and ``error`` are optional (any JSON value); any other
    key is refused.
    """
    _check_size(body)
    fmt = _object_format(fmt, "a command response")
    value = _load(body, fmt)
    if not isinstance(value, dict):
        raise MalformedPayload(
            f"a command response must be an object, not {_json_type(value)}", field="payload"
        )
    unknown = sorted(set(value) - _RESPONSE_KEYS)
    if unknown:
        raise MalformedPayload(
            f"a command response has unknown keys {unknown}: only status, result and error",
            field=unknown[0],
        )
    status = value.get("status")
    if status not in ("ok", "error"):
        raise MalformedPayload(
            f"a command response needs status 'ok' or 'error', not {status!r}", field="status"
        )
    return {"status": status, "result": value.get("result"), "error": value.get("error")}


# -- LoRaWAN through ChirpStack v4 --------------------------------------------------------------

_FRACTION = re.compile(r"(\.\d{6})\d+")  # ChirpStack sends nanoseconds; datetime reads micros


def decode_lorawan_uplink(body: bytes, *, received: float) -> DeviceMessage:
    """Decode a ChirpStack v4 uplink event (``application/{app}/device/{devEUI}/event/up``).

    The device id is ``deviceInfo.devEui`` as sent; the telemetry payload is ``object``, what
    the device profile's codec decoded, with nested objects kept and top-level entries the twin
    could not store dropped (keys that are empty or hold NUL, at any depth). Nothing else of
    the event (fCnt, rxInfo, ...) is added. ``ts`` is the event's ``time``, else ``received``.
    """
    _check_size(body)
    event = _load_json(body)
    if not isinstance(event, dict):
        raise MalformedPayload(
            f"a ChirpStack uplink event must be an object, not {_json_type(event)}",
            field="payload",
        )
    info = event.get("deviceInfo")
    if not isinstance(info, dict):
        raise MalformedPayload(
            "the uplink event has no deviceInfo object (is this a ChirpStack v4 event?)",
            field="deviceInfo",
        )
    dev_eui = info.get("devEui")
    if not isinstance(dev_eui, str):
        raise MalformedPayload(
            "the uplink event has no deviceInfo.devEui text", field="deviceInfo.devEui"
        )
    device_id = validate_device_id(dev_eui)
    decoded = event.get("object")
    if decoded is None:
        raise MalformedPayload(
            f"the uplink of {device_id} has no decoded object: its device profile has no "
            "codec (configure a payload codec in ChirpStack)",
            field="object",
        )
    if not isinstance(decoded, dict):
        raise MalformedPayload(
            f"the uplink's object must be an object, not {_json_type(decoded)}", field="object"
        )
    payload = {key: value for key, value in decoded.items() if _storable(key, value)}
    _check_ts(payload, "object.ts")
    moment = event.get("time")
    if moment is None:
        ts = received
    else:
        if isinstance(moment, str):
            moment = _FRACTION.sub(r"\1", moment, count=1)
        ts = parse_timestamp(moment, field="time")
    return DeviceMessage(
        device_id, "telemetry", payload, ts=ts, protocol="lorawan", received=received
    )


def _storable(key: str, value: Any) -> bool:
    try:
        validate_values({key: value}, field="object")
    except InvalidPatch:
        return False
    return True


# -- MQTT topics and presence -------------------------------------------------------------------

TopicKind = Literal["telemetry", "reported", "command_response", "status", "lorawan_uplink"]
_TOPIC_KINDS: Final = frozenset(get_args(TopicKind))
_COMMAND_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True, slots=True)
class TopicMatch:
    """What an MQTT topic twinfleet reads says: the body's kind, the device and the command."""

    kind: TopicKind
    device_id: str
    command_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _TOPIC_KINDS:
            raise ValueError(f"unknown topic kind {self.kind!r}")
        validate_device_id(self.device_id)
        if (self.kind == "command_response") != (self.command_id is not None):
            raise ValueError("a command id goes with command responses, and only with them")
        if self.command_id is not None and _COMMAND_ID.fullmatch(self.command_id) is None:
            raise UnknownCommand(
                f"command id {self.command_id!r} must match [A-Za-z0-9._:-]{{1,128}}",
                field="command_id",
            )


_DEVICE_TOPICS: Final[dict[str, TopicKind]] = {
    "telemetry": "telemetry",
    "reported": "reported",
    "status": "status",
}


def parse_topic(topic: str) -> TopicMatch | None:
    """What an MQTT topic carries, or ``None`` for a topic twinfleet does not read.

    Read: ``devices/{id}/telemetry``, ``devices/{id}/reported``, ``devices/{id}/status``,
    ``devices/{id}/commands/{cmd_id}/response`` and ChirpStack's
    ``application/{app}/device/{devEUI}/event/up``. Messages arrive under their own topic, so a
    ``$share/...`` subscription filter is not a topic (``None``). A topic of these shapes with an
    invalid device id raises :class:`InvalidDeviceId`; with an invalid command id,
    :class:`UnknownCommand`.
    """
    parts = topic.split("/")
    if parts[0] == "devices":
        if len(parts) == 3 and parts[2] in _DEVICE_TOPICS:
            return TopicMatch(_DEVICE_TOPICS[parts[2]], parts[1])
        if len(parts) == 5 and parts[2] == "commands" and parts[4] == "response":
            return TopicMatch("command_response", parts[1], parts[3])
    elif (
        len(parts) == 6
        and parts[0] == "application"
        and parts[1]
        and parts[2] == "device"
        and parts[4:] == ["event", "up"]
    ):
        return TopicMatch("lorawan_uplink", parts[3])
    return None


def decode_status(body: bytes) -> bool:
    """Whether a ``devices/{id}/status`` body says the device is online.

    The body is ``online`` or ``offline`` (surrounding whitespace ignored; a typical last will
    is ``offline``) or a JSON object with a boolean ``online`` (other keys are ignored).
    """
    _check_size(body)
    text = body.strip()
    if text == b"online":
        return True
    if text == b"offline":
        return False
    try:
        value = _load_json(body)
    except MalformedPayload:
        raise MalformedPayload(
            'a status body must be "online", "offline" or a JSON object {"online": true|false}',
            field="payload",
        ) from None
    online = value.get("online") if isinstance(value, dict) else None
    if not isinstance(online, bool):
        raise MalformedPayload(
            'a status body must be "online", "offline" or a JSON object {"online": true|false}',
            field="online" if isinstance(value, dict) else "payload",
        )
    return online


# -- decoding -----------------------------------------------------------------------------------


def _check_size(body: bytes) -> None:
    if len(body) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"the body is {len(body)} bytes, over the limit of {MAX_PAYLOAD_BYTES}",
            field="payload",
        )


def _format(fmt: ContentFormat | None) -> ContentFormat | None:
    # Callers may hand over a raw CoAP number; anything not in the enum is unsupported.
    return content_format(fmt)


def _object_format(fmt: ContentFormat | None, what: str) -> ContentFormat | None:
    fmt = _format(fmt)
    if fmt is ContentFormat.SENML_JSON or fmt is ContentFormat.SENML_CBOR:
        raise UnsupportedFormat(
            f"{what} comes as JSON or CBOR, not {fmt.name}", field="content_format"
        )
    return fmt


def _load(body: bytes, fmt: ContentFormat | None) -> Any:
    if fmt is None or fmt is ContentFormat.JSON or fmt is ContentFormat.SENML_JSON:
        return _load_json(body)
    return _load_cbor(body, senml=fmt is ContentFormat.SENML_CBOR)


_LONG_DIGITS = re.compile(rb"\d{19,}")  # -2**63 has 19 digits, 2**64 - 1 has 20


def _load_json(body: bytes) -> Any:
    if not body:
        raise MalformedPayload("the body is empty", field="payload")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"the body is not valid JSON: {exc}", field="payload") from None
    if _LONG_DIGITS.search(body) is not None:
        _refuse_big_ints(body)
    return value


class _BigInt(ValueError):
    pass


def _int64(text: str) -> int:
    # Long literals are refused before int() parses them (and before Python's digit limit).
    value = int(text) if len(text) <= 21 else INT_MAX + 1
    if not INT_MIN <= value <= INT_MAX:
        raise _BigInt(text)
    return value


def _refuse_big_ints(body: bytes) -> None:
    """Refuse integer literals beyond 64 bits, which orjson would quietly turn into floats."""
    try:
        json.loads(body, parse_int=_int64)
    except _BigInt as exc:
        literal = str(exc) if len(str(exc)) <= 40 else f"{str(exc)[:40]}..."
        raise MalformedPayload(
            f"the body holds the integer {literal}, beyond 64 bits", field="payload"
        ) from None
    except RecursionError:
        raise MalformedPayload(
            "the body nests too deeply to check its integers", field="payload"
        ) from None
    except ValueError as exc:  # orjson read it, so this should not happen; refuse, not crash
        raise MalformedPayload(
            f"the body could not be checked for integers beyond 64 bits: {exc}", field="payload"
        ) from None


_MAX_CBOR_NESTING: Final = 64  # far beyond the twin's own depth limit; keeps cbor2 shallow


def _load_cbor(body: bytes, *, senml: bool) -> Any:
    if not body:
        raise MalformedPayload("the body is empty", field="payload")
    _check_cbor_items(body, allow_bytes=senml)
    try:
        value = cbor2.loads(body)
    except Exception as exc:  # any cbor2 failure (bad UTF-8, odd chunks) is a malformed body
        raise MalformedPayload(f"the body is not valid CBOR: {exc}", field="payload") from None
    # SenML records are checked field by field (a byte-string vd is fine there); a body that
    # is not an object is refused by its caller.
    if not senml and isinstance(value, dict):
        try:
            validate_values(value, field="payload")
        except InvalidPatch as exc:
            field = exc.field.removeprefix("payload.") if exc.field else "payload"
            raise MalformedPayload(exc.message, field=field) from None
    return value


def _check_cbor_items(body: bytes, *, allow_bytes: bool) -> None:
    """Walk the CBOR item headers without decoding values; refuse what JSON cannot carry."""
    end = len(body)
    pos = 0
    pending = [1]  # items still expected in each open container; -1 while indefinite
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        if pos >= end:
            raise MalformedPayload("the CBOR body ends in the middle of an item", field="payload")
        initial = body[pos]
        pos += 1
        if initial == 0xFF:
            if pending[-1] != -1:
                raise MalformedPayload(
                    "the CBOR body has a break outside an indefinite-length item",
                    field="payload",
                )
            pending.pop()
            continue
        if pending[-1] > 0:
            pending[-1] -= 1
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            argument = info
        elif info < 28:
            size = 1 << (info - 24)
            if pos + size > end:
                raise MalformedPayload(
                    "the CBOR body ends in the middle of an item", field="payload"
                )
            argument = int.from_bytes(body[pos : pos + size], "big")
            pos += size
        elif info == 31 and 2 <= major <= 5:
            argument = -1
        else:
            raise MalformedPayload(
                f"the CBOR body has the reserved initial byte 0x{initial:02x}", field="payload"
            )
        if major == 6:
            raise MalformedPayload(
                "CBOR tags are not accepted (send times as Unix seconds or RFC 3339 text)",
                field="payload",
            )
        if major == 7:
            if info in (20, 21, 22, 25, 26, 27):  # false, true, null and floats
                continue
            raise MalformedPayload(
                "CBOR simple values other than false, true and null are not accepted",
                field="payload",
            )
        if major == 2 and not allow_bytes:
            raise MalformedPayload(
                "CBOR byte strings are not accepted: send text or numbers", field="payload"
            )
        if major in (2, 3):
            if argument == -1:
                pending.append(-1)  # chunks follow until a break (cbor2 checks their kind)
            else:
                pos += argument
                if pos > end:
                    raise MalformedPayload(
                        "the CBOR body ends in the middle of a string", field="payload"
                    )
        elif major in (4, 5):
            if len(pending) > _MAX_CBOR_NESTING:
                raise MalformedPayload(
                    f"the CBOR body nests deeper than {_MAX_CBOR_NESTING} levels",
                    field="payload",
                )
            pending.append(argument if major == 4 or argument == -1 else 2 * argument)
    if pos != end:
        raise MalformedPayload(
            "the CBOR body has bytes after its one top-level item", field="payload"
        )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"
