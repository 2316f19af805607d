"""Device message bodies: JSON, CBOR, SenML, ChirpStack uplinks, MQTT topics and presence."""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import FrozenInstanceError
from datetime import datetime, timezone
from typing import Any

import cbor2
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinfleet.adapters.payloads import (
    ContentFormat,
    TopicMatch,
    content_format,
    decode_command_response,
    decode_lorawan_uplink,
    decode_reported,
    decode_status,
    decode_telemetry,
    parse_topic,
)
from twinfleet.runtime.messages import DeviceMessage
from twinfleet.twins import (
    MAX_PAYLOAD_BYTES,
    InvalidDeviceId,
    InvalidTimestamp,
    MalformedPayload,
    PayloadTooLarge,
    TwinfleetError,
    UnknownCommand,
    UnsupportedFormat,
)

NOW = 1_732_700_000.0  # the receive time handed to the decoders
PROPERTY_SETTINGS = settings(deadline=None)  # shared CI machines can be slow


def telemetry(
    body: bytes, fmt: ContentFormat | None = None, *, device_id: str = "pump-7"
) -> list[DeviceMessage]:
    return decode_telemetry(body, device_id, fmt=fmt, protocol="coap", received=NOW)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp()


# -- content formats ----------------------------------------------------------------------------


def test_content_formats_are_the_coap_numbers() -> None:
    assert [(f.name, f.value) for f in ContentFormat] == [
        ("JSON", 50),
        ("CBOR", 60),
        ("SENML_JSON", 110),
        ("SENML_CBOR", 112),
    ]
    assert content_format(None) is None
    assert content_format(112) is ContentFormat.SENML_CBOR


@pytest.mark.parametrize("number", [0, 40, 41, 111, 113, 11542])
def test_other_content_formats_are_unsupported(number: int) -> None:
    with pytest.raises(UnsupportedFormat) as info:
        content_format(number)
    assert info.value.field == "content_format"
    with pytest.raises(UnsupportedFormat):
        telemetry(b"{}", number)  # type: ignore[arg-type]  # a raw CoAP number slips through


# -- measurements objects -----------------------------------------------------------------------


def test_a_json_object_is_one_telemetry_message() -> None:
    body = b'{"temperature": 21.5, "humidity": 45, "door": "closed", "pos": {"lat": 52.37}}'
    [message] = decode_telemetry(body, "pump-7", protocol="mqtt", received=NOW)
    assert message == DeviceMessage(
        "pump-7",
        "telemetry",
        {"temperature": 21.5, "humidity": 45, "door": "closed", "pos": {"lat": 52.37}},
        ts=None,
        protocol="mqtt",
        received=NOW,
    )


@pytest.mark.parametrize("ts", [1_732_699_990, 1_732_699_990.25, "2024-11-27T09:33:10Z"])
def test_ts_stays_in_the_payload_for_the_twin(ts: object) -> None:
    [message] = telemetry(dumps({"temperature": 21.5, "ts": ts}))
    assert message.payload == {"temperature": 21.5, "ts": ts}
    assert message.ts is None


@pytest.mark.parametrize(
    "ts", ["yesterday", "2024-11-27T09:33:10", -1, 1e20, True, None, [1], {"s": 1}]
)
def test_a_bad_ts_is_refused_at_the_edge(ts: object) -> None:
    with pytest.raises(InvalidTimestamp) as info:
        telemetry(dumps({"temperature": 21.5, "ts": ts}))
    assert info.value.field == "ts"


def test_an_empty_object_is_a_heartbeat() -> None:
    [message] = telemetry(b"{}")
    assert message.payload == {}


@pytest.mark.parametrize("fmt", [ContentFormat.JSON, ContentFormat.CBOR])
def test_json_and_cbor_objects_with_a_content_format(fmt: ContentFormat) -> None:
    payload = {"temperature": 21.5, "count": 2**64 - 1, "low": -(2**63), "ok": True, "x": None}
    body = dumps(payload) if fmt is ContentFormat.JSON else cbor2.dumps(payload)
    [message] = telemetry(body, fmt)
    assert message.payload == payload
    assert message.protocol == "coap"


@pytest.mark.parametrize(
    ("fmt", "body"),
    [
        (ContentFormat.JSON, b'[{"n": "t", "v": 1}]'),
        (ContentFormat.CBOR, cbor2.dumps([{0: "t", 2: 1}])),
        (ContentFormat.SENML_JSON, b'{"n": "t", "v": 1}'),
        (ContentFormat.SENML_CBOR, cbor2.dumps({0: "t", 2: 1})),
    ],
)
def test_a_content_format_fixes_the_top_level_type(fmt: ContentFormat, body: bytes) -> None:
    with pytest.raises(MalformedPayload) as info:
        telemetry(body, fmt)
    assert info.value.field == "payload"


@pytest.mark.parametrize("body", [b'"21.5"', b"21.5", b"null", b"true"])
def test_sniffing_accepts_only_objects_and_arrays(body: bytes) -> None:
    with pytest.raises(MalformedPayload, match="JSON object or a SenML array"):
        telemetry(body)


def test_sniffing_reads_json_only() -> None:
    with pytest.raises(MalformedPayload, match="not valid JSON"):
        telemetry(cbor2.dumps({"temperature": 21.5}))


@pytest.mark.parametrize("device_id", ["", "pump 7", "a/b", "#", "x" * 129])
def test_the_device_id_is_validated(device_id: str) -> None:
    with pytest.raises(InvalidDeviceId):
        telemetry(b"{}", device_id=device_id)


# -- SenML (RFC 8428) ---------------------------------------------------------------------------

# RFC 8428 section 5.1.1: a single datapoint.
RFC_SINGLE = [{"n": "urn:dev:ow:10e2073a01080063", "u": "Cel", "v": 23.1}]
# Section 5.1.2: multiple datapoints sharing a base name.
RFC_MULTIPLE = [
    {"bn": "urn:dev:ow:10e2073a01080063:", "n": "voltage", "u": "V", "v": 120.1},
    {"n": "current", "u": "A", "v": 1.2},
]
# Section 5.1.3: multiple measurements at times relative to a base time.
RFC_SERIES = [
    {
        "bn": "urn:dev:ow:10e2073a0108006:",
        "bt": 1.276020076001e09,
        "bu": "A",
        "bver": 5,
        "n": "voltage",
        "u": "V",
        "v": 120.1,
    },
    {"n": "current", "t": -5, "v": 1.2},
    {"n": "current", "t": -4, "v": 1.3},
    {"n": "current", "t": -3, "v": 1.4},
    {"n": "current", "t": -2, "v": 1.5},
    {"n": "current", "t": -1, "v": 1.6},
    {"n": "current", "v": 1.7},
]
# Section 5.1.5: multiple data types.
RFC_TYPES = [
    {"bn": "urn:dev:ow:10e2073a01080063:", "n": "temp", "u": "Cel", "v": 23.1},
    {"n": "label", "vs": "Machine Room"},
    {"n": "open", "vb": False},
    {"n": "nfc-reader", "vd": "aGkgCg"},
]

CBOR_LABELS = {
    "bver": -1,
    "bn": -2,
    "bt": -3,
    "bu": -4,
    "bv": -5,
    "bs": -6,
    "n": 0,
    "u": 1,
    "v": 2,
    "vs": 3,
    "vb": 4,
    "s": 5,
    "t": 6,
    "ut": 7,
    "vd": 8,
}


def senml_cbor(pack: list[dict[str, Any]]) -> bytes:
    """The SenML CBOR form of a pack (RFC 8428 section 6: integer labels, vd as bytes)."""
    records = []
    for record in pack:
        encoded: dict[int, Any] = {}
        for key, value in record.items():
            if key == "vd":
                encoded[CBOR_LABELS[key]] = base64.urlsafe_b64decode(
                    value + "=" * (-len(value) % 4)
                )
            else:
                encoded[CBOR_LABELS[key]] = value
        records.append(encoded)
    return cbor2.dumps(records)


def senml(pack: list[dict[str, Any]], fmt: ContentFormat | None = None) -> list[DeviceMessage]:
    if fmt is ContentFormat.SENML_CBOR:
        return telemetry(senml_cbor(pack), fmt)
    return telemetry(dumps(pack), fmt)


@pytest.mark.parametrize("fmt", [None, ContentFormat.SENML_JSON, ContentFormat.SENML_CBOR])
def test_rfc_single_datapoint(fmt: ContentFormat | None) -> None:
    assert senml(RFC_SINGLE, fmt) == [
        DeviceMessage(
            "pump-7",
            "telemetry",
            {"urn:dev:ow:10e2073a01080063": 23.1},
            ts=NOW,
            protocol="coap",
            received=NOW,
        )
    ]


@pytest.mark.parametrize("fmt", [None, ContentFormat.SENML_JSON, ContentFormat.SENML_CBOR])
def test_rfc_multiple_datapoints_use_n_as_the_metric(fmt: ContentFormat | None) -> None:
    [message] = senml(RFC_MULTIPLE, fmt)
    assert message.payload == {"voltage": 120.1, "current": 1.2}
    assert message.ts == NOW  # no time at all: "roughly now"
    assert message.device_id == "pump-7"  # from the topic or URI, never from bn


@pytest.mark.parametrize("fmt", [None, ContentFormat.SENML_JSON, ContentFormat.SENML_CBOR])
def test_rfc_series_is_grouped_by_resolved_time(fmt: ContentFormat | None) -> None:
    messages = senml(RFC_SERIES, fmt)
    bt = 1.276020076001e09
    assert [(m.ts, m.payload) for m in messages] == [
        (bt, {"voltage": 120.1, "current": 1.7}),
        (bt - 5, {"current": 1.2}),
        (bt - 4, {"current": 1.3}),
        (bt - 3, {"current": 1.4}),
        (bt - 2, {"current": 1.5}),
        (bt - 1, {"current": 1.6}),
    ]
    assert all(m.kind == "telemetry" and "ts" not in m.payload for m in messages)


def test_rfc_data_types() -> None:
    [message] = senml(RFC_TYPES)
    assert message.payload == {
        "temp": 23.1,
        "label": "Machine Room",
        "open": False,
        "nfc-reader": "aGkgCg",
    }


def test_senml_cbor_data_values_are_byte_strings_read_as_base64url() -> None:
    [from_json] = senml(RFC_TYPES, ContentFormat.SENML_JSON)
    [from_cbor] = senml(RFC_TYPES, ContentFormat.SENML_CBOR)
    assert from_cbor.payload == from_json.payload
    assert from_cbor.payload["nfc-reader"] == "aGkgCg"


def test_relative_times_count_back_from_received() -> None:
    pack = [
        {"n": "temp", "v": 20.5, "t": -60},
        {"n": "temp", "v": 21.0, "t": 0},
        {"n": "rh", "v": 40},
    ]
    assert [(m.ts, m.payload) for m in senml(pack)] == [
        (NOW - 60, {"temp": 20.5}),
        (NOW, {"temp": 21.0, "rh": 40}),
    ]


def test_a_relative_base_time_applies_to_later_records() -> None:
    pack = [{"bt": -30, "n": "temp", "v": 20.5}, {"n": "temp", "t": 10, "v": 20.7}]
    assert [m.ts for m in senml(pack)] == [NOW - 30, NOW - 20]


def test_times_from_2_to_the_28_are_absolute() -> None:
    absolute, relative = senml([{"n": "a", "v": 1, "t": 2**28}, {"n": "b", "v": 2, "t": 2**28 - 1}])
    assert absolute.ts == 2**28
    assert relative.ts == NOW + 2**28 - 1


def test_base_values_and_sums() -> None:
    pack = [
        {"bn": "meter-1/", "bv": 1000, "bs": 50, "n": "energy", "v": 5, "s": 2.5},
        {"n": "energy_total", "v": 7},
        {"bv": 0.5, "n": "power", "v": 1.25},
        {"n": "volume", "s": 10},
    ]
    [message] = senml(pack)
    assert message.payload == {
        "energy": 1005,
        "energy_sum": 52.5,
        "energy_total": 1007,
        "power": 1.75,
        "volume_sum": 60,
    }
    assert isinstance(message.payload["energy"], int)


def test_base_name_supplies_the_name_when_n_is_absent() -> None:
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:temp", "v": 23.1},
        {"bn": "/3303/0/5700", "v": 22.5, "t": -10},
        {"bn": "sensor:rh", "n": "humidity", "v": 41},
    ]
    assert [m.payload for m in senml(pack)] == [{"temp": 23.1, "humidity": 41}, {"5700": 22.5}]


def test_unknown_extension_fields_are_ignored() -> None:
    [message] = senml([{"n": "temp", "v": 21.5, "ut": 60, "l": "link", "x-vendor": [1, 2]}])
    assert message.payload == {"temp": 21.5}


@pytest.mark.parametrize(
    ("pack", "field", "match"),
    [
        ([], "payload", "no records"),
        ([{"n": "temp", "v": 1}, "temp"], "senml[1]", "must be an object"),
        ([{"n": "temp"}], "senml[0]", "has no value"),
        ([{"n": "temp", "u": "Cel", "t": -5}], "senml[0]", "has no value"),
        ([{"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.3e9}], "senml[0]", "has no value"),
        ([{"n": "temp", "v": 1, "vs": "1"}], "senml[0]", "more than one value"),
        ([{"v": 1}], "senml[0]", "has no name"),
        ([{"bn": "urn:dev:ow:10e2073a01080063:", "v": 1}], "senml[0]", "has no name"),
        ([{"n": "", "v": 1}], "senml[0]", "has no name"),
        ([{"n": "ts", "v": 1}], "senml[0].n", "reserved"),
        ([{"n": "temp", "v": "21.5"}], "senml[0].v", "must be a number"),
        ([{"n": "temp", "v": True}], "senml[0].v", "must be a number"),
        ([{"n": "temp", "vs": 21}], "senml[0].vs", "must be text"),
        ([{"n": "temp", "vb": 1}], "senml[0].vb", "true or false"),
        ([{"n": "temp", "vd": 1}], "senml[0].vd", "base64url"),
        ([{"n": 7, "v": 1}], "senml[0].n", "must be text"),
        ([{"bn": None, "n": "t", "v": 1}], "senml[0].bn", "must be text"),
        ([{"n": "temp", "v": 1, "t": "now"}], "senml[0].t", "must be a number"),
        ([{"n": "temp", "v": 1, "bt_": 5}], "senml[0].bt_", "must-understand"),
        ([{"bver": 11, "n": "temp", "v": 1}], "senml[0].bver", "versions 1 to 10"),
        ([{"bver": 1.5, "n": "temp", "v": 1}], "senml[0].bver", "versions 1 to 10"),
        ([{"bv": 2**64 - 1, "n": "count", "v": 1}], "senml[0].v", "beyond 64 bits"),
        ([{"n": "temp", "v": 1e308, "bv": 1e308}], "senml[0].v", "not a finite number"),
    ],
)
def test_bad_senml_is_malformed(pack: list[Any], field: str, match: str) -> None:
    for fmt in (None, ContentFormat.SENML_JSON):
        with pytest.raises(MalformedPayload, match=match) as info:
            telemetry(dumps(pack), fmt)
        assert info.value.field == field


def test_senml_times_out_of_range_are_invalid_timestamps() -> None:
    with pytest.raises(InvalidTimestamp) as info:
        senml([{"n": "temp", "v": 1, "t": -(10**10)}])  # long before 1970
    assert info.value.field == "senml[0].t"
    with pytest.raises(InvalidTimestamp):
        senml([{"bt": 1e12, "n": "temp", "v": 1}])  # after the year 3000


def test_senml_cbor_refuses_byte_strings_outside_vd() -> None:
    with pytest.raises(MalformedPayload, match="must be a number") as info:
        telemetry(cbor2.dumps([{0: "temp", 2: b"\x15"}]), ContentFormat.SENML_CBOR)
    assert info.value.field == "senml[0].v"


def test_senml_cbor_refuses_non_text_non_label_keys() -> None:
    with pytest.raises(MalformedPayload, match="not text"):
        telemetry(cbor2.dumps([{0: "temp", 2: 1, 1.5: 2}]), ContentFormat.SENML_CBOR)
    with pytest.raises(MalformedPayload, match="not text"):  # a boolean is no label
        telemetry(cbor2.dumps([{0: "temp", 2: 1, True: 2}]), ContentFormat.SENML_CBOR)


def test_senml_cbor_ignores_unknown_labels_and_checks_numbers() -> None:
    [message] = telemetry(cbor2.dumps([{0: "temp", 2: 1, 23: b"vendor"}]), ContentFormat.SENML_CBOR)
    assert message.payload == {"temp": 1}
    for bad in (float("nan"), float("inf")):
        with pytest.raises(MalformedPayload, match="finite") as info:
            telemetry(cbor2.dumps([{0: "temp", 2: bad}]), ContentFormat.SENML_CBOR)
        assert info.value.field == "senml[0].v"


# -- reported state -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [None, ContentFormat.JSON, ContentFormat.CBOR])
def test_reported_is_one_merge_patch(fmt: ContentFormat | None) -> None:
    patch = {"firmware": {"current": "1.4.2"}, "config": {"interval_s": 60, "old": None}}
    body = cbor2.dumps(patch) if fmt is ContentFormat.CBOR else dumps(patch)
    message = decode_reported(body, "pump-7", fmt=fmt, protocol="mqtt", received=NOW)
    assert message == DeviceMessage("pump-7", "reported", patch, protocol="mqtt", received=NOW)


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"1", b"null"])
def test_reported_must_be_an_object(body: bytes) -> None:
    with pytest.raises(MalformedPayload, match="merge patch"):
        decode_reported(body, "pump-7", protocol="mqtt", received=NOW)


@pytest.mark.parametrize("fmt", [ContentFormat.SENML_JSON, ContentFormat.SENML_CBOR])
def test_reported_does_not_come_as_senml(fmt: ContentFormat) -> None:
    with pytest.raises(UnsupportedFormat):
        decode_reported(b"{}", "pump-7", fmt=fmt, protocol="coap", received=NOW)


def test_reported_ts_is_checked_too() -> None:
    with pytest.raises(InvalidTimestamp):
        decode_reported(b'{"ts": "soon", "a": 1}', "pump-7", protocol="mqtt", received=NOW)


# -- command responses --------------------------------------------------------------------------


def test_command_responses() -> None:
    ok = decode_command_response(b'{"status": "ok", "result": {"rebooted": true}}')
    assert ok == {"status": "ok", "result": {"rebooted": True}, "error": None}
    failed = decode_command_response(
        cbor2.dumps({"status": "error", "error": "valve stuck", "result": None}),
        fmt=ContentFormat.CBOR,
    )
    assert failed == {"status": "error", "result": None, "error": "valve stuck"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{}", "status"),
        (b'{"result": 1}', "status"),
        (b'{"status": "OK"}', "status"),
        (b'{"status": true}', "status"),
        (b'{"status": "ok", "code": 3}', "code"),
        (b'{"status": "ok", "b": 1, "a": 2}', "a"),
        (b'["ok"]', "payload"),
        (b"ok", "payload"),
    ],
)
def test_bad_command_responses(body: bytes, field: str) -> None:
    with pytest.raises(MalformedPayload) as info:
        decode_command_response(body)
    assert info.value.field == field


def test_command_responses_do_not_come_as_senml() -> None:
    with pytest.raises(UnsupportedFormat):
        decode_command_response(b'{"status": "ok"}', fmt=ContentFormat.SENML_JSON)


# -- ChirpStack v4 uplinks ----------------------------------------------------------------------


def chirpstack_uplink(**changes: Any) -> dict[str, Any]:
    """An uplink event as ChirpStack v4 publishes it on application/{app}/device/{eui}/event/up."""
    event: dict[str, Any] = {
        "deduplicationId": "3f0b8c4e-2d7a-4c55-9a51-6f1d0b2e7c90",
        "time": "2024-11-27T10:15:42.123456789+00:00",
        "deviceInfo": {
            "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
            "tenantName": "ChirpStack",
            "applicationId": "7d2a6a55-1b52-4a1d-9f44-6a1cf3e1d1a8",
            "applicationName": "cold-store",
            "deviceProfileId": "0e7b3bb6-5c4c-4a29-b1de-1e0ef2f9a6d5",
            "deviceProfileName": "Dragino LHT65N",
            "deviceName": "freezer-3",
            "devEui": "a84041000181c1f2",
            "deviceClassEnabled": "CLASS_A",
            "tags": {"site": "north"},
        },
        "devAddr": "0127c5e1",
        "adr": True,
        "dr": 5,
        "fCnt": 1284,
        "fPort": 2,
        "confirmed": False,
        "data": "y0AI9AGoAQj0f/8=",
        "object": {
            "BatV": 3.021,
            "TempC_SHT": -18.44,
            "Hum_SHT": 62.1,
            "Ext_sensor": "Temperature Sensor",
            "alarm": False,
            "probe": {"TempC_DS": -19.2, "ok": True},
        },
        "rxInfo": [
            {
                "gatewayId": "0016c001ff1e4f5a",
                "uplinkId": 40771,
                "gwTime": "2024-11-27T10:15:42.101+00:00",
                "nsTime": "2024-11-27T10:15:42.118933512+00:00",
                "rssi": -97,
                "snr": 7.5,
                "channel": 3,
                "location": {"latitude": 52.37, "longitude": 4.91},
                "context": "wrO0Hw==",
                "metadata": {"region_config_id": "eu868", "region_common_name": "EU868"},
                "crcStatus": "CRC_OK",
            }
        ],
        "txInfo": {
            "frequency": 867100000,
            "modulation": {
                "lora": {"bandwidth": 125000, "spreadingFactor": 7, "codeRate": "CR_4_5"}
            },
        },
        "regionConfigId": "eu868",
    }
    event.update(changes)
    return event


def test_a_chirpstack_uplink_is_telemetry_of_its_dev_eui() -> None:
    event = chirpstack_uplink()
    message = decode_lorawan_uplink(dumps(event), received=NOW)
    assert message.device_id == "a84041000181c1f2"
    assert message.kind == "telemetry"
    assert message.payload == event["object"]  # nested objects kept, nothing added
    assert message.ts == pytest.approx(at("2024-11-27T10:15:42.123456"))
    assert message.protocol == "lorawan"


def test_an_uplink_without_time_is_stamped_when_received() -> None:
    event = chirpstack_uplink()
    del event["time"]
    assert decode_lorawan_uplink(dumps(event), received=NOW).ts == NOW


def test_an_uplink_without_object_means_no_codec() -> None:
    event = chirpstack_uplink()
    del event["object"]
    with pytest.raises(MalformedPayload, match="device profile has no codec") as info:
        decode_lorawan_uplink(dumps(event), received=NOW)
    assert info.value.field == "object"
    with pytest.raises(MalformedPayload, match="no codec"):
        decode_lorawan_uplink(dumps(chirpstack_uplink(object=None)), received=NOW)


def test_an_uplink_drops_what_the_twin_could_not_store() -> None:
    event = chirpstack_uplink(object={"temp": 4.5, "": 1, "bad": {"a\x00": 1}, "ok": {"b": 2}})
    payload = decode_lorawan_uplink(dumps(event), received=NOW).payload
    assert payload == {"temp": 4.5, "ok": {"b": 2}}


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"object": [1, 2]}, MalformedPayload, "object"),
        ({"deviceInfo": None}, MalformedPayload, "deviceInfo"),
        ({"deviceInfo": {"deviceName": "x"}}, MalformedPayload, "deviceInfo.devEui"),
        ({"deviceInfo": {"devEui": 42}}, MalformedPayload, "deviceInfo.devEui"),
        ({"deviceInfo": {"devEui": "a8 40 41"}}, InvalidDeviceId, "id"),
        ({"time": "yesterday"}, InvalidTimestamp, "time"),
        ({"time": "2024-11-27T10:15:42"}, InvalidTimestamp, "time"),
        ({"object": {"temp": 1, "ts": "x"}}, InvalidTimestamp, "object.ts"),
    ],
)
def test_bad_uplinks(changes: dict[str, Any], error: type[TwinfleetError], field: str) -> None:
    with pytest.raises(error) as info:
        decode_lorawan_uplink(dumps(chirpstack_uplink(**changes)), received=NOW)
    assert info.value.field == field


def test_a_chirpstack_v3_event_is_not_read() -> None:
    v3 = {"applicationID": "1", "devEUI": "AgICAgICAgI=", "object": {"temp": 1}}
    with pytest.raises(MalformedPayload, match="deviceInfo"):
        decode_lorawan_uplink(dumps(v3), received=NOW)


def test_an_uplink_is_json() -> None:
    with pytest.raises(MalformedPayload, match="not valid JSON"):
        decode_lorawan_uplink(cbor2.dumps(chirpstack_uplink()), received=NOW)


# -- MQTT topics --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "match"),
    [
        ("devices/pump-7/telemetry", TopicMatch("telemetry", "pump-7")),
        ("devices/pump-7/reported", TopicMatch("reported", "pump-7")),
        ("devices/pump-7/status", TopicMatch("status", "pump-7")),
        (
            "devices/pump-7/commands/5f2c0a9e1b7d4c3a/response",
            TopicMatch("command_response", "pump-7", "5f2c0a9e1b7d4c3a"),
        ),
        (
            "application/7d2a6a55-1b52-4a1d-9f44-6a1cf3e1d1a8/device/a84041000181c1f2/event/up",
            TopicMatch("lorawan_uplink", "a84041000181c1f2"),
        ),
        # Tricky but valid device ids.
        ("devices/urn:dev:ow:10e2073a01080063/telemetry", None),
        ("devices/a.b_c-D:9/telemetry", None),
        ("devices/telemetry/telemetry", None),
        ("devices/devices/reported", None),
        ("devices/.../status", None),
        (f"devices/{'x' * 128}/telemetry", None),
    ],
)
def test_topics_we_read(topic: str, match: TopicMatch | None) -> None:
    parsed = parse_topic(topic)
    assert parsed is not None
    if match is None:
        assert parsed.kind == topic.rsplit("/", 1)[1]
        assert parsed.device_id == topic.split("/")[1]
    else:
        assert parsed == match


@pytest.mark.parametrize(
    "topic",
    [
        "devices/pump-7/desired",  # the platform publishes these
        "devices/pump-7/commands/5f2c0a9e1b7d4c3a",
        "devices/pump-7",
        "devices",
        "",
        "/devices/pump-7/telemetry",
        "devices/pump-7/telemetry/",
        "devices/pump-7/telemetry/extra",
        "devices/a/b/telemetry",  # a device id cannot hold a slash
        "devices/pump-7/commands/c1/reply",
        "Devices/pump-7/telemetry",
        # Messages arrive under their own topic: a shared-subscription filter is not one.
        "$share/twinfleet/devices/pump-7/telemetry",
        "$SYS/broker/uptime",
        "application/app/device/a84041000181c1f2/event/join",
        "application/app/device/a84041000181c1f2/event/status",
        "application//device/a84041000181c1f2/event/up",
        "application/app/device/a84041000181c1f2/command/down",
    ],
)
def test_topics_we_do_not_read(topic: str) -> None:
    assert parse_topic(topic) is None


@pytest.mark.parametrize(
    "topic",
    [
        "devices//telemetry",
        "devices/+/telemetry",
        "devices/#/reported",
        "devices/pump 7/status",
        "devices/pümpe/telemetry",
        f"devices/{'x' * 129}/telemetry",
        "devices/pump\x007/telemetry",
        "devices/ /commands/c1/response",
        "application/app/device//event/up",
        "application/app/device/a840 41/event/up",
    ],
)
def test_invalid_device_ids_in_our_topics_raise(topic: str) -> None:
    with pytest.raises(InvalidDeviceId):
        parse_topic(topic)


@pytest.mark.parametrize("command_id", ["", "+", "a b", "x" * 129])
def test_invalid_command_ids_raise(command_id: str) -> None:
    with pytest.raises(UnknownCommand) as info:
        parse_topic(f"devices/pump-7/commands/{command_id}/response")
    assert info.value.field == "command_id"


def test_topic_matches_are_frozen_and_self_validating() -> None:
    match = TopicMatch("telemetry", "pump-7")
    with pytest.raises(FrozenInstanceError):
        match.device_id = "other"  # type: ignore[misc]
    with pytest.raises(ValueError, match="command id"):
        TopicMatch("command_response", "pump-7")
    with pytest.raises(ValueError, match="command id"):
        TopicMatch("telemetry", "pump-7", "c1")
    with pytest.raises(ValueError, match="kind"):
        TopicMatch("desired", "pump-7")  # type: ignore[arg-type]
    with pytest.raises(InvalidDeviceId):
        TopicMatch("status", "pump 7")


# -- presence -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "online"),
    [
        (b"online", True),
        (b"offline", False),
        (b" offline\n", False),
        (b'{"online": true}', True),
        (b'{"online": false, "reason": "last will"}', False),
    ],
)
def test_status_bodies(body: bytes, online: bool) -> None:
    assert decode_status(body) is online


@pytest.mark.parametrize(
    "body", [b"", b"ONLINE", b"on", b"1", b"true", b'"online"', b'{"online": 1}', b"{}", b"\xff"]
)
def test_bad_status_bodies(body: bytes) -> None:
    with pytest.raises(MalformedPayload, match="online"):
        decode_status(body)


# -- size and decoding failures -----------------------------------------------------------------

OVERSIZED = b"{" + b" " * MAX_PAYLOAD_BYTES  # 128 KB + 1 byte, and not even valid JSON

DECODERS = [
    pytest.param(telemetry, id="telemetry"),
    pytest.param(lambda body: telemetry(body, ContentFormat.CBOR), id="telemetry-cbor"),
    pytest.param(lambda body: telemetry(body, ContentFormat.SENML_CBOR), id="telemetry-senml"),
    pytest.param(
        lambda body: decode_reported(body, "pump-7", protocol="mqtt", received=NOW), id="reported"
    ),
    pytest.param(decode_command_response, id="command-response"),
    pytest.param(lambda body: decode_lorawan_uplink(body, received=NOW), id="lorawan"),
    pytest.param(decode_status, id="status"),
]


@pytest.mark.parametrize("decode", DECODERS)
def test_bodies_just_over_128_kb_are_refused_before_decoding(decode: Any) -> None:
    assert len(OVERSIZED) == 128 * 1024 + 1
    with pytest.raises(PayloadTooLarge) as info:
        decode(OVERSIZED)
    assert info.value.field == "payload"


def test_a_body_of_exactly_128_kb_is_read() -> None:
    body = b'{"blob": "' + b"x" * (MAX_PAYLOAD_BYTES - 12) + b'"}'
    assert len(body) == MAX_PAYLOAD_BYTES
    [message] = telemetry(body)
    assert len(message.payload["blob"]) == MAX_PAYLOAD_BYTES - 12


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "empty"),
        (b'{"temperature": 21.5', "not valid JSON"),
        (b"{'temperature': 21.5}", "not valid JSON"),
        (b'{"temperature": NaN}', "not valid JSON"),
        (b'{"temperature": Infinity}', "not valid JSON"),
        (b'{"temperature": -Infinity}', "not valid JSON"),
        (b'{"temperature": 1e400}', "not valid JSON"),
        (b'{"temperature": 21.5} {}', "not valid JSON"),
        (b'{"t": "\xff"}', "not valid JSON"),
        (b'{"t": "\\ud800"}', "not valid JSON"),
        (b"[" * 2000 + b"]" * 2000, "not valid JSON"),
        (b'{"count": 18446744073709551616}', "beyond 64 bits"),
        (b'{"count": -9223372036854775809}', "beyond 64 bits"),
        (b'{"count": [1, {"deep": 1' + b"0" * 24 + b"}]}", "beyond 64 bits"),
        (b'{"count": 1' + b"0" * 400 + b"}", "not valid JSON"),  # beyond even a double
    ],
)
def test_malformed_json(body: bytes, match: str) -> None:
    with pytest.raises(MalformedPayload, match=match) as info:
        telemetry(body)
    assert info.value.field == "payload"


def test_long_digit_runs_that_are_not_big_integers_are_fine() -> None:
    body = (
        b'{"serial": "12345678901234567890123", "pi": 3.14159265358979323846,'
        b' "n": -9223372036854775808}'
    )
    [message] = telemetry(body)
    assert message.payload["serial"] == "12345678901234567890123"
    assert message.payload["n"] == -(2**63)


def cbor_tagged(tag: int, value: Any) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(tag, value))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "empty"),
        (b"\xa1\x61t", "ends in the middle"),  # a map whose value never comes
        (b"\xa1\x61t\xfb\x40\x35", "ends in the middle"),  # a cut float
        (b"\xa1\x63te", "ends in the middle"),  # a cut key
        (b"\xa0\x00", "bytes after"),
        (b"\xff", "break outside"),
        (b"\xa1\x61t\x1c", "reserved initial byte"),
        (b"\xa1\x61t\xf7", "simple values"),  # undefined
        (b"\xa1\x61t\xf0", "simple values"),  # simple(16)
        (b"\xa1\x61t\xf8\x20", "simple values"),  # simple(32)
        (b"\xa1\x62\xff\xfe\x01", "not valid CBOR"),  # a key that is not UTF-8
        (b"\xbf\x61t\x01", "ends in the middle"),  # an indefinite map never closed
        (b"\xa1\x61t\x7f\x61a\x01\xff", "not valid CBOR"),  # an int chunk in a text string
        (cbor2.dumps({"t": b"\x01\x02"}), "byte strings"),
        (cbor2.dumps({"t": [1, {"raw": b""}]}), "byte strings"),
        (cbor2.dumps({"ts": datetime(2024, 11, 27, tzinfo=timezone.utc)}), "tags"),
        (cbor2.dumps({"n": 2**64}), "tags"),  # a bignum
        (cbor_tagged(55799, {"t": 1}), "tags"),  # even the self-describe marker
        (cbor_tagged(28, {"t": 1}), "tags"),  # shared references could build cycles
        (cbor2.dumps({"n": -(2**64)}), "beyond 64 bits"),
        (cbor2.dumps({"t": float("nan")}), "not a finite number"),
        (cbor2.dumps({"t": {"deep": float("-inf")}}), "not a finite number"),
        (cbor2.dumps({1: "one"}), "key"),
        (cbor2.dumps({"": 1}), "key"),
        (b"\x81" * 100 + b"\x00", "nests deeper"),
    ],
)
def test_malformed_cbor(body: bytes, match: str) -> None:
    with pytest.raises(MalformedPayload, match=match):
        telemetry(body, ContentFormat.CBOR)


def test_cbor_error_fields_name_the_value() -> None:
    with pytest.raises(MalformedPayload) as info:
        telemetry(cbor2.dumps({"probe": {"t": float("nan")}}), ContentFormat.CBOR)
    assert info.value.field == "probe.t"


def test_indefinite_lengths_and_half_floats_are_plain_cbor() -> None:
    # {_ "t": 1.5 (half precision), "s": (_ "ab", "c")}
    body = b"\xbf\x61t\xf9\x3e\x00\x61s\x7f\x62ab\x61c\xff\xff"
    [message] = telemetry(body, ContentFormat.CBOR)
    assert message.payload == {"t": 1.5, "s": "abc"}


# -- properties ---------------------------------------------------------------------------------

KEYS = st.text(min_size=1, max_size=12).filter(lambda key: key != "ts" and "\x00" not in key)
NUMBERS = st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
MEASUREMENTS = st.dictionaries(KEYS, NUMBERS, max_size=20)


@PROPERTY_SETTINGS
@given(MEASUREMENTS)
def test_measurement_objects_round_trip_through_json_and_cbor(payload: dict[str, Any]) -> None:
    as_json = json.dumps(payload, allow_nan=False).encode()
    for body, fmt in (
        (as_json, None),
        (as_json, ContentFormat.JSON),
        (cbor2.dumps(payload), ContentFormat.CBOR),
    ):
        [message] = telemetry(body, fmt)
        assert message.payload == payload
        assert [type(v) for v in message.payload.values()] == [type(v) for v in payload.values()]


ALL_FORMATS = [None, *ContentFormat]


def decode_everything(body: bytes) -> None:
    """Feed one body to every decoder; only twinfleet errors may come out."""
    for fmt in ALL_FORMATS:
        with contextlib.suppress(TwinfleetError):
            telemetry(body, fmt)
        with contextlib.suppress(TwinfleetError):
            decode_reported(body, "pump-7", fmt=fmt, protocol="coap", received=NOW)
        with contextlib.suppress(TwinfleetError):
            decode_command_response(body, fmt=fmt)
    with contextlib.suppress(TwinfleetError):
        decode_lorawan_uplink(body, received=NOW)
    with contextlib.suppress(TwinfleetError):
        decode_status(body)


@PROPERTY_SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_twinfleet_errors(body: bytes) -> None:
    decode_everything(body)


SENML_KEYS = st.sampled_from(
    ["bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut", "x_"]
)
ANY_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=4),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=4) | st.integers(-8, 8), children, max_size=3)
    ),
    max_leaves=8,
)
RECORDS = st.dictionaries(SENML_KEYS | st.integers(-7, 9), ANY_VALUE, max_size=6)
PACKS = st.lists(RECORDS | ANY_VALUE, max_size=5)
BODIES = PACKS | ANY_VALUE | st.dictionaries(st.text(max_size=6), ANY_VALUE, max_size=5)


@PROPERTY_SETTINGS
@given(BODIES)
def test_arbitrary_structures_raise_only_twinfleet_errors(value: Any) -> None:
    decode_everything(cbor2.dumps(value))
    try:
        body = json.dumps(value, allow_nan=True).encode()  # NaN as JSON must be refused too
    except (TypeError, ValueError):  # bytes or integer keys have no JSON form
        return
    decode_everything(body)
