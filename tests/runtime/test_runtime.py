"""Integration tests of ``Runtime`` on a real local Ray, against SQLite and Redis stores."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import helpers
import pytest

from twinfleet import Runtime
from twinfleet.errors import InvalidDeviceId
from twinfleet.runtime import (
    DeviceMessage,
    HostSettings,
    RayPlatform,
    RouterSettings,
    RuntimeSettings,
)
from twinfleet.twins import TwinFilter, TwinNotFound, VersionConflict

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

T0 = 1_800_000_000.0


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def store_url(request: pytest.FixtureRequest) -> str:
    """The same tests against the embedded store and Redis."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def runtime(store_url: str) -> Iterator[Runtime]:
    with Runtime(store=store_url, settings=RuntimeSettings(hosts=2)) as rt:
        yield rt


def telemetry(device_id: str, ts: float, **values: float) -> DeviceMessage:
    """A smart sensor's reading, over the protocol "test"."""
    return helpers.telemetry(device_id, ts, "test", **values)


def test_ingested_telemetry_reaches_the_twin(runtime: Runtime) -> None:
    result = runtime.ingest([telemetry("s-1", T0, temperature=21.5, humidity=40.0)])
    assert result.accepted == 1
    doc = runtime.twin("s-1").get()
    assert doc["reported"] == {"temperature": 21.5, "humidity": 40.0}
    assert doc["metadata"]["reported"]["temperature"] == T0
    assert doc["type"] == "smart-sensor"
    assert doc["connectivity"]["online"] is True
    assert doc["connectivity"]["protocol"] == "test"
    assert doc["anomaly"]["model"] == "ewma"
    assert doc["version"] == 1


def test_older_reading_does_not_overwrite_a_newer_one(runtime: Runtime) -> None:
    runtime.ingest([telemetry("s-2", T0 + 10, temperature=25.0)])
    runtime.ingest([telemetry("s-2", T0 + 5, temperature=19.0)])
    runtime.flush()
    doc = runtime.twin("s-2").get()
    assert doc["reported"]["temperature"] == 25.0
    assert doc["version"] == 1
    assert runtime.stats()["stale"] == 1


def test_many_twins_across_hosts(runtime: Runtime) -> None:
    messages = [
        telemetry(f"m-{i:04d}", T0 + k, temperature=20.0 + k) for k in range(3) for i in range(500)
    ]
    assert runtime.ingest(messages).accepted == 1500
    runtime.flush()
    stats = runtime.stats()
    assert stats["applied"] == 1500
    assert stats["active"] == 500
    assert all(host["active"] > 100 for host in stats["hosts"])  # both hosts got a share
    assert runtime.twin("m-0042").get()["reported"]["temperature"] == 22.0


def test_malformed_messages_are_rejected_without_losing_good_ones(runtime: Runtime) -> None:
    result = runtime.ingest(
        [
            telemetry("good-1", T0, temperature=1.0),
            DeviceMessage("bad id/with slash", "telemetry", {"temperature": 1.0}),
            DeviceMessage("good-2", "gossip", {"temperature": 1.0}),  # type: ignore[arg-type]
            telemetry("good-3", T0, temperature=3.0),
            DeviceMessage("good-4", "telemetry", {"temperature": float("nan")}, T0),
        ]
    )
    assert result.accepted == 3
    assert [r.code for r in result.rejected] == ["invalid_device_id", "invalid_patch"]
    runtime.flush()
    assert runtime.twin("good-1").get()["reported"] == {"temperature": 1.0}
    assert runtime.twin("good-3").get()["reported"] == {"temperature": 3.0}
    stats = runtime.stats()
    assert stats["rejected"] == 1
    assert stats["recent_rejections"][0].code == "invalid_patch"


def test_get_of_an_unknown_twin_is_not_found(runtime: Runtime) -> None:
    with pytest.raises(TwinNotFound, match="nobody"):
        runtime.twin("nobody").get()
    with pytest.raises(InvalidDeviceId):
        runtime.twin("no such/id")


def test_desired_patch_with_expected_version(runtime: Runtime) -> None:
    runtime.ingest([telemetry("v-1", T0, temperature=20.0)])
    handle = runtime.twin("v-1")
    doc = handle.patch_desired({"sample_interval": 5, "mode": {"eco": True}}, expected_version=1)
    assert doc["version"] == 2
    assert doc["desired"] == {"sample_interval": 5, "mode": {"eco": True}}
    assert doc["delta"] == {"sample_interval": 5, "mode": {"eco": True}}
    with pytest.raises(VersionConflict) as caught:
        handle.patch_desired({"sample_interval": 9}, expected_version=1)
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert handle.get()["desired"]["sample_interval"] == 5
    doc = handle.patch_desired({"mode": None})
    assert doc["desired"] == {"sample_interval": 5}
    assert doc["version"] == 3


def test_tags_and_queries(runtime: Runtime) -> None:
    runtime.ingest(
        [
            *(telemetry(f"q-{i}", T0, temperature=20.0) for i in range(6)),
            DeviceMessage("meter-1", "telemetry", {"power": 1.0}, T0, "test", "smart-meter.water"),
        ]
    )
    runtime.twin("q-1").patch_tags({"site": "plant-a"})
    runtime.twin("q-4").patch_tags({"site": "plant-a", "floor": 2})
    page = runtime.query(tags={"site": "plant-a"})
    assert [d["id"] for d in page.items] == ["q-1", "q-4"]
    assert page.next is None
    assert [d["id"] for d in runtime.query(type="smart-meter").items] == ["meter-1"]
    assert runtime.query(TwinFilter(online=False)).items == []
    assert len(runtime.query(online=True, limit=1000).items) == 7
    # cursor pagination visits every twin exactly once, in id order
    seen: list[str] = []
    after = None
    while True:
        page = runtime.query(type="smart-sensor", after=after, limit=4)
        seen.extend(d["id"] for d in page.items)
        if page.next is None:
            break
        after = page.next
    assert seen == [f"q-{i}" for i in range(6)]
    assert [d["id"] for d in runtime.twins(type="smart-sensor", page_size=2)] == seen


def test_anomalous_query_after_a_spike(runtime: Runtime) -> None:
    normal = [telemetry("a-1", T0 + k, temperature=20.0 + 0.1 * (k % 5)) for k in range(60)]
    runtime.ingest(normal)
    runtime.ingest([telemetry("a-2", T0 + k, temperature=30.0 + 0.1 * (k % 3)) for k in range(60)])
    runtime.ingest([telemetry("a-1", T0 + 61, temperature=80.0)])
    runtime.flush()
    anomalous = runtime.query(anomalous=True).items
    assert [d["id"] for d in anomalous] == ["a-1"]
    assert anomalous[0]["anomaly"]["since"] == T0 + 61
    assert anomalous[0]["anomaly"]["score"] > 4.0


def test_registered_twin_and_dedicated_placement(runtime: Runtime) -> None:
    doc = runtime.register(
        "press-9", device_type="industrial-controller", tags={"line": "3"}, placement="dedicated"
    )
    assert doc["type"] == "industrial-controller"
    assert doc["tags"] == {"line": "3"}
    runtime.ingest([DeviceMessage("press-9", "telemetry", {"motor_rpm": 1500.0}, T0, "test")])
    runtime.ingest([telemetry("plain-1", T0, temperature=20.0)])
    runtime.flush()
    assert runtime.twin("press-9").get()["reported"] == {"motor_rpm": 1500.0}
    stats = runtime.stats()
    assert stats["dedicated"] == 1
    # the dedicated twin lives in its own actor, not in a shared host
    assert sum(h["active"] for h in stats["hosts"]) == 1
    ids = [d["id"] for d in runtime.query(limit=100).items]
    assert ids == ["plain-1", "press-9"]  # listed once, though the store also holds it


def test_all_dedicated_runtime_has_the_same_interface(store_url: str) -> None:
    settings = RuntimeSettings(hosts=1, default_placement="dedicated")
    with Runtime(store=store_url, settings=settings) as rt:
        rt.ingest([telemetry(f"d-{i}", T0, temperature=20.0 + i) for i in range(3)])
        doc = rt.twin("d-1").patch_desired({"interval": 2})
        assert doc["reported"] == {"temperature": 21.0}
        assert rt.stats()["dedicated"] == 3
        assert [d["id"] for d in rt.query().items] == ["d-0", "d-1", "d-2"]


def test_passivation_and_reactivation_keep_state(store_url: str) -> None:
    host = HostSettings(idle_timeout_s=0.3, sweep_interval_s=0.2, flush_interval_s=0.1)
    with Runtime(store=store_url, settings=RuntimeSettings(hosts=2, host=host)) as rt:
        rt.ingest([telemetry("p-1", T0 + k, temperature=20.0 + (k % 3)) for k in range(30)])
        rt.twin("p-1").patch_desired({"interval": 7})
        before = rt.twin("p-1").get()
        deadline = time.monotonic() + 30
        while rt.stats()["active"] and time.monotonic() < deadline:
            time.sleep(0.2)
        stats = rt.stats()
        assert stats["active"] == 0
        assert sum(h["passivated"] for h in stats["hosts"]) == 1
        after = rt.twin("p-1").get()  # reactivated from the store
        assert after == before
        assert sum(h["activated"] for h in rt.stats()["hosts"]) == 1


def test_restart_on_the_same_store_keeps_everything(store_url: str) -> None:
    with Runtime(store=store_url) as rt:
        rt.ingest([telemetry("r-1", T0 + k, temperature=20.0 + (k % 4)) for k in range(40)])
        rt.twin("r-1").patch_desired({"interval": 3})
        rt.twin("r-1").patch_tags({"site": "b"})
        before = rt.twin("r-1").get()
    with Runtime(store=store_url) as rt:
        assert rt.twin("r-1").get() == before
        # the model state came back too: the next reading scores as if nothing happened
        rt.ingest([telemetry("r-1", T0 + 41, temperature=95.0)])
        assert rt.twin("r-1").get()["anomaly"]["anomalous"] is True


def test_messages_of_one_twin_apply_in_the_order_sent(store_url: str) -> None:
    # One message per Ray call and many calls in flight: Ray may run them in any order, the
    # hosts must not.
    settings = RuntimeSettings(hosts=2, router=RouterSettings(max_batch=1, max_in_flight=16))
    with Runtime(store=store_url, settings=settings) as rt:
        rt.ingest(
            DeviceMessage("o-1", "telemetry", {"seq": k}, T0 + k, "test", "smart-sensor")
            for k in range(400)
        )
        rt.flush()
        stats = rt.stats()
        assert (stats["applied"], stats["stale"]) == (400, 0)
        doc = rt.twin("o-1").get()
        assert doc["reported"]["seq"] == 399
        assert doc["version"] == 400


def test_scaling_hosts_moves_twins_and_keeps_their_state(runtime: Runtime) -> None:
    ids = [f"sc-{i:03d}" for i in range(300)]
    runtime.ingest(telemetry(i, T0, temperature=float(n)) for n, i in enumerate(ids))
    runtime.twin("sc-007").patch_desired({"interval": 9})
    before = {i: runtime.twin(i).get() for i in ("sc-007", "sc-123", "sc-299")}
    old = runtime.placement

    new = runtime.scale(3)
    moved = old.moves(new, ids)
    assert 0 < len(moved) < 200  # about a third: only the new host's share moves
    assert all(to == "host-2" for _, to in moved.values())
    for twin_id, doc in before.items():
        assert runtime.twin(twin_id).get() == doc
    runtime.ingest(telemetry(i, T0 + 1, temperature=50.0) for i in ids)
    runtime.flush()
    stats = runtime.stats()
    assert [h["host"] for h in stats["hosts"]] == ["host-0", "host-1", "host-2"]
    assert [h["active"] for h in stats["hosts"]] == [
        sum(1 for i in ids if new.owner(i) == h) for h in new.hosts
    ]  # no twin is active on two hosts
    assert runtime.twin("sc-007").get()["desired"] == {"interval": 9}

    runtime.scale(1)
    assert runtime.stats()["hosts"][0]["host"] == "host-0"
    assert runtime.query(limit=1000).items[-1]["reported"]["temperature"] == 50.0
    assert len(runtime.query(limit=1000).items) == 300
    assert runtime.twin("sc-007").get()["desired"] == {"interval": 9}


def test_a_host_process_dying_loses_no_acknowledged_write(store_url: str) -> None:
    settings = RuntimeSettings(hosts=2, host=HostSettings(flush_interval_s=0.2))
    with Runtime(store=store_url, settings=settings) as rt:
        ids = [f"k-{i:02d}" for i in range(40)]
        rt.ingest(telemetry(i, T0, temperature=1.0) for i in ids)
        for i in ids[:10]:
            rt.twin(i).patch_desired({"mode": "eco"})
        rt.persist()
        fleet = RayPlatform(rt)  # direct connections, opened before the host dies

        async def read_all() -> list[dict[str, Any]]:
            return [await fleet.calls.get(i) for i in ids]

        with asyncio.Runner() as runner:
            assert len(runner.run(read_all())) == len(ids)
            victim = rt.stats()["hosts"][0]
            os.kill(victim["pid"], signal.SIGKILL)
            # Ray restarts the host; it activates its twins again from the store.
            rt.ingest(telemetry(i, T0 + 1, temperature=2.0) for i in ids)
            rt.flush()
            assert rt.stats()["failed"] == 0
            # The dead host's connection is gone: calls find the restarted host's endpoint.
            direct = {d["id"]: d for d in runner.run(read_all())}
            runner.run(fleet.close())
        for i in ids:
            doc = rt.twin(i).get()
            assert doc["reported"]["temperature"] == 2.0 == direct[i]["reported"]["temperature"]
            if i in ids[:10]:
                assert doc["desired"] == {"mode": "eco"} == direct[i]["desired"]
        assert rt.stats()["hosts"][0]["pid"] != victim["pid"]


def test_commands_and_events_through_the_runtime(runtime: Runtime) -> None:
    runtime.ingest([telemetry("cmd-1", T0, temperature=1.0)])
    fleet = RayPlatform(runtime)

    async def device() -> None:
        async for event in fleet.events(types={"command"}, after=0):
            if event.twin_id == "cmd-1" and event.data["status"] == "queued":
                claimed = await fleet.claim_commands("cmd-1", protocol="test")
                await fleet.command_response(
                    "cmd-1", claimed[0]["id"], {"status": "ok", "result": {"pong": True}}
                )
                return

    answering = threading.Thread(target=asyncio.run, args=(device(),))
    answering.start()
    record = runtime.send_command("cmd-1", "ping", timeout_s=30)
    answering.join(timeout=30)
    assert (record["status"], record["result"]) == ("succeeded", {"pong": True})
    assert runtime.command("cmd-1", record["id"])["status"] == "succeeded"
    events = runtime.events(types=["command", "presence"], twin_id="cmd-1")
    assert [(e.type, e.data.get("status", e.data.get("online"))) for e in events] == [
        ("presence", True),
        ("command", "queued"),
        ("command", "sent"),
        ("command", "succeeded"),
    ]
    assert events == sorted(events, key=lambda e: e.id)


def test_a_command_for_a_silent_device_waits_queued(runtime: Runtime) -> None:
    runtime.ingest([telemetry("cmd-2", T0, temperature=1.0)])
    record = runtime.send_command("cmd-2", "reboot", timeout_s=0.1, ttl_s=600)
    assert record["status"] == "queued"
    assert record["expires_at"] == pytest.approx(record["created"] + 600)


def test_a_family_model_assignment_survives_a_restart(store_url: str) -> None:
    with Runtime(store=store_url) as rt:
        rt.ingest([telemetry("asg-1", T0, temperature=1.0)])
        rt.flush()
        assert rt.assign_model("smart-sensor", "stuck", {"repeats": 3}) == {
            "family": "smart-sensor",
            "model": "stuck",
            "params": {"repeats": 3},
        }
        assert rt.twin("asg-1").get()["anomaly"]["model"] == "stuck"
    with Runtime(store=store_url) as rt:
        assert rt.model_assignments() == [
            {"family": "smart-sensor", "model": "stuck", "params": {"repeats": 3}}
        ]
        rt.ingest([telemetry("asg-2", T0, temperature=1.0)])
        rt.flush()
        for twin_id in ("asg-1", "asg-2"):  # woken from the store, and new
            anomaly = rt.twin(twin_id).get()["anomaly"]
            assert (anomaly["model"], anomaly["source"]) == ("stuck", "family")
        rt.assign_model("smart-sensor", None)
