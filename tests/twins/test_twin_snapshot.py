"""Snapshots: a twin saved as JSON comes back equal, its model continuing where it left off."""

from __future__ import annotations

import numpy as np
import orjson

from twinfleet.models import EwmaZScore, default_registry
from twinfleet.twins import Twin

T0 = 1_700_000_000.0


def busy_twin() -> Twin:
    twin = Twin(
        "meter-3",
        device_type="smart-meter.water",
        tags={"site": "north", "owner": {"team": "ops"}},
        model=default_registry().create("ewma", {"warmup": 5}),
        now=T0,
    )
    rng = np.random.default_rng(11)
    for i, x in enumerate(rng.normal(5.0, 0.2, 40)):
        twin.apply_message("telemetry", {"flow": float(x)}, now=T0 + i, ts=T0 + i, protocol="mqtt")
    twin.apply_message(
        "reported", {"firmware": {"version": "1.0"}, "cfg": {"rate": 5}}, now=T0 + 50
    )
    twin.patch_desired({"firmware": {"version": "2.0"}, "cfg": {"rate": 10}}, now=T0 + 60)
    twin.apply_message("telemetry", {"flow": 50.0}, now=T0 + 70, ts=T0 + 70)  # anomalous
    return twin


def through_json(twin: Twin) -> Twin:
    snap = orjson.loads(orjson.dumps(twin.snapshot()))
    return Twin.from_snapshot(snap, restore_model=default_registry().restore)


def test_snapshot_round_trip_restores_an_equal_document() -> None:
    twin = busy_twin()
    assert twin.anomalous is True  # the round trip carries a live verdict too

    restored = through_json(twin)

    assert restored.document() == twin.document()
    assert restored.family is twin.family
    assert restored.created == twin.created
    assert restored.updated == twin.updated


def test_snapshot_round_trip_model_continues_identically() -> None:
    twin = busy_twin()
    restored = through_json(twin)
    assert isinstance(restored.model, EwmaZScore)

    rng = np.random.default_rng(12)
    for i, x in enumerate(rng.normal(5.0, 0.2, 30), start=100):
        for t in (twin, restored):
            t.apply_message("telemetry", {"flow": float(x)}, now=T0 + i, ts=T0 + i)
        assert restored.document() == twin.document()


def test_restored_twin_keeps_timestamp_rules() -> None:
    twin = busy_twin()
    restored = through_json(twin)
    assert restored.apply_message("telemetry", {"flow": 1.0}, now=T0 + 200, ts=T0) == 0
    assert restored.version == twin.version


def test_snapshot_of_a_new_twin_round_trips() -> None:
    twin = Twin("pump-7", now=T0)
    restored = through_json(twin)
    assert restored.document() == twin.document()
    assert restored.model is None


def test_from_snapshot_without_restorer_drops_the_model() -> None:
    twin = busy_twin()
    restored = Twin.from_snapshot(orjson.loads(orjson.dumps(twin.snapshot())))
    assert restored.model is None
    assert restored.document()["anomaly"]["model"] is None


def test_from_snapshot_fills_defaults_for_missing_fields() -> None:
    restored = Twin.from_snapshot({"id": "pump-7", "version": 4})
    doc = restored.document()
    assert doc["version"] == 4
    assert doc["type"] == "generic"
    assert doc["reported"] == doc["desired"] == doc["tags"] == {}
    assert doc["connectivity"] == {"online": False, "last_seen": None, "protocol": None}
    assert doc["anomaly"]["anomalous"] is False
