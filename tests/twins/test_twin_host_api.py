"""What a twin offers its host: checkpoint and restore, alarm changes, type, lifecycle, model."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from twinfleet.twins import CommandRequest, Twin
from twinfleet.twins.families import family_for

T0 = 1_800_000_000.0


class Scorer:
    """A model that calls every reading anomalous with the score it is given."""

    def __init__(self, name: str = "scorer", score: float = 5.0) -> None:
        self.name = name
        self.score = score

    def update(self, values: Mapping[str, float], ts: float) -> tuple[float, bool, str | None]:
        return self.score, True, None

    def state(self) -> dict[str, Any]:
        return {}


def monitor() -> Twin:
    """A patient monitor with a reading, desired state, tags, a model and an open alarm."""
    twin = Twin("pm-1", device_type="patient-monitor", tags={"ward": "a"}, now=T0)
    twin.set_model(Scorer(), now=T0, info={"name": "scorer", "source": "default"})
    for i in range(2):  # two low readings raise spo2-low
        twin.apply_message("telemetry", {"spo2": 85.0}, now=T0 + i, ts=T0 + i)
    twin.patch_desired({"rate": 5, "alarm": {"volume": 3}}, now=T0 + 2)
    twin.add_command(CommandRequest("beep"), "c-1", now=T0 + 2)
    return twin


def open_alarm(twin: Twin) -> str:
    (alarm,) = [a for a in twin.alarms.alarms() if a["state"] == "active"]
    return str(alarm["id"])


def every_write(twin: Twin, now: float) -> None:
    """Each kind of change an application write makes."""
    twin.patch_desired({"rate": None, "alarm": {"volume": 9}}, now=now)
    twin.patch_tags({"ward": "b", "bed": 4}, now=now)
    twin.set_type("patient-monitor.icu")
    twin.set_model(Scorer("other", 1.0), now=now, info={"name": "other", "source": "twin"})
    twin.acknowledge_alarm(open_alarm(twin), who="nurse", now=now)
    twin.add_command(CommandRequest("reboot"), "c-2", now=now)
    twin.claim_commands(None, now=now)  # changes the command records in place
    twin.set_lifecycle("suspended", now=now)


def test_restore_undoes_every_kind_of_application_write() -> None:
    twin = monitor()
    before, snapshot = twin.document(), copy.deepcopy(twin.snapshot())  # it shares containers
    checkpoint = twin.checkpoint()
    every_write(twin, T0 + 10)
    assert twin.document() != before
    twin.restore(checkpoint, bumped=twin.version - checkpoint.version)
    assert twin.document() == before
    assert twin.snapshot() == snapshot
    assert twin.family is family_for("patient-monitor")
    assert [r["status"] for r in (twin.commands or {}).values()] == ["queued"]


def test_a_checkpoint_is_frozen_and_holds_its_own_commands() -> None:
    twin = monitor()
    checkpoint = twin.checkpoint()
    with pytest.raises(dataclasses.FrozenInstanceError):
        checkpoint.version = 99  # type: ignore[misc]
    twin.claim_commands(None, now=T0 + 3)
    assert checkpoint.commands is not None
    assert checkpoint.commands["c-1"]["status"] == "queued"
    # restoring twice gives the same twin: the checkpoint's commands are not handed out
    twin.restore(checkpoint, bumped=0)
    twin.claim_commands(None, now=T0 + 4)
    twin.restore(checkpoint, bumped=0)
    assert (twin.commands or {})["c-1"]["status"] == "queued"


def test_restore_keeps_what_device_messages_brought_meanwhile() -> None:
    twin = monitor()
    checkpoint = twin.checkpoint()
    twin.patch_desired({"rate": 6}, now=T0 + 10)
    twin.set_model(Scorer("other", 1.0), now=T0 + 10)
    bumped = twin.version - checkpoint.version
    twin.apply_message("telemetry", {"spo2": 97.0}, now=T0 + 11, ts=T0 + 11)  # meanwhile
    version, updated, score = twin.version, twin.updated, twin.anomaly_score
    twin.restore(checkpoint, bumped=bumped)
    assert twin.desired == {"rate": 5, "alarm": {"volume": 3}}
    assert twin.model is checkpoint.model
    assert twin.reported == {"spo2": 97.0}
    # the version moved on with the message: going back would reuse a version number
    assert (twin.version, twin.updated, twin.anomaly_score) == (version, updated, score)


def test_restore_puts_back_the_version_and_verdict_when_nothing_came_meanwhile() -> None:
    twin = monitor()
    checkpoint = twin.checkpoint()
    twin.set_model(Scorer("other", 1.0), now=T0 + 10)  # forgets the verdict
    assert (twin.anomaly_score, twin.anomalous) == (0.0, False)
    twin.restore(checkpoint, bumped=twin.version - checkpoint.version)
    assert (twin.version, twin.updated) == (checkpoint.version, checkpoint.updated)
    assert (twin.anomaly_score, twin.anomalous, twin.anomaly_since) == checkpoint.verdict
    assert twin.anomalous is True


def test_restore_leaves_a_registered_device_active_if_its_first_message_came() -> None:
    twin = Twin("r-1", device_type="smart-sensor", now=T0)
    assert twin.mark_registered()
    checkpoint = twin.checkpoint()
    twin.patch_tags({"site": "n"}, now=T0 + 1)
    bumped = twin.version - checkpoint.version
    twin.apply_message("telemetry", {"temperature": 20.0}, now=T0 + 2)  # meanwhile
    twin.restore(checkpoint, bumped=bumped)
    assert twin.lifecycle == "active"
    assert twin.tags == {}


def test_restore_undoes_a_lifecycle_move() -> None:
    twin = monitor()
    checkpoint = twin.checkpoint()
    assert twin.set_lifecycle("decommissioned", now=T0 + 10)
    twin.restore(checkpoint, bumped=1)
    assert twin.lifecycle == "active"
    twin.apply_message("telemetry", {"spo2": 97.0}, now=T0 + 11)  # not refused


def test_alarm_changes_are_handed_out_once() -> None:
    twin = Twin("pm-2", device_type="patient-monitor", now=T0)
    assert twin.drain_alarm_changes() == []
    twin.apply_message("telemetry", {"spo2": 85.0}, now=T0, ts=T0)
    twin.apply_message("telemetry", {"spo2": 84.0}, now=T0 + 1, ts=T0 + 1)
    (raised,) = twin.drain_alarm_changes()
    assert (raised["rule"], raised["state"]) == ("spo2-low", "active")
    assert twin.drain_alarm_changes() == []
    assert twin.alarm_changes == []


def test_set_type_moves_the_twin_to_the_family_of_its_type() -> None:
    twin = Twin("t-1", now=T0)
    assert (twin.type, twin.family.name) == ("generic", "generic")
    assert twin.set_type("smart-meter.water")
    assert (twin.type, twin.family) == ("smart-meter.water", family_for("smart-meter.water"))
    assert not twin.set_type("smart-meter.water")
    assert twin.version == 0  # its new model, if any, makes the new version


def test_mark_registered_only_for_a_twin_without_a_past() -> None:
    fresh = Twin("n-1", now=T0)
    assert fresh.mark_registered()
    assert (fresh.lifecycle, fresh.version) == ("registered", 0)
    fresh.apply_message("telemetry", {"temperature": 1.0}, now=T0 + 1)
    assert fresh.lifecycle == "active"
    assert not fresh.mark_registered()  # it has reported since
    assert fresh.lifecycle == "active"
    patched = Twin("n-2", now=T0)
    patched.patch_desired({"a": 1}, now=T0)
    assert not patched.mark_registered()
    assert patched.lifecycle == "active"


def test_set_model_choice_records_how_the_model_is_chosen_and_nothing_else() -> None:
    model = Scorer()
    twin = Twin("m-1", model=model, now=T0)
    info = {"name": "scorer", "params": {}, "source": "twin"}
    twin.set_model_choice(info)
    info["source"] = "changed by its caller"
    assert twin.model_info == {"name": "scorer", "params": {}, "source": "twin"}
    assert twin.model is model
    assert twin.version == 0
    twin.set_model_choice(None)
    assert twin.model_info is None
    assert twin.model is model
