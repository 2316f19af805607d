"""Events and commands on a plain ``TwinHost`` with an ``EventHub``: no Ray, a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from helpers import FakeClock, telemetry

from twinfleet.errors import InvalidRequest, TwinNotFound, UnknownCommand
from twinfleet.runtime import EventHub, HostSettings, TwinHost
from twinfleet.runtime.stores import MemoryStore

T0 = 1_800_000_000.0
QUIET = HostSettings(flush_interval_s=3600.0, sweep_interval_s=3600.0, event_interval_s=3600.0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def hub() -> EventHub:
    return EventHub()


@pytest.fixture
async def host(hub: EventHub, clock: FakeClock) -> AsyncIterator[TwinHost]:
    host = TwinHost("h", MemoryStore(), settings=QUIET, events=hub, clock=clock)
    await host.start()
    yield host
    await host.stop()


async def events_of(host: TwinHost, hub: EventHub, kind: str) -> list[tuple[str, dict]]:
    await host.send_events()
    return [(e.twin_id, dict(e.data)) for e in await hub.poll(0, types={kind})]


async def test_presence_events_when_a_twin_comes_and_goes(
    host: TwinHost, hub: EventHub, clock: FakeClock
) -> None:
    await host.apply([telemetry("p-1", T0, temperature=1.0)])
    clock.now += 31  # smart sensors report every 10 s; offline after 3 intervals of silence
    assert await host.sweep() == (1, 0)
    await host.apply([telemetry("p-1", clock.now, temperature=2.0)])
    presence = await events_of(host, hub, "presence")
    assert [(t, d["online"]) for t, d in presence] == [("p-1", True), ("p-1", False), ("p-1", True)]
    assert presence[0][1]["protocol"] == "mqtt"


async def test_last_will_marks_offline_at_once(host: TwinHost, hub: EventHub) -> None:
    await host.apply([telemetry("w-1", T0, temperature=1.0)])
    assert await host.device_offline("w-1", protocol="mqtt") is True
    assert await host.device_offline("w-1", protocol="mqtt") is False  # no news
    assert await host.device_offline("nobody", protocol="mqtt") is False
    assert (await host.get("w-1"))["connectivity"]["online"] is False
    assert [d["online"] for _, d in await events_of(host, hub, "presence")] == [True, False]


async def test_a_last_will_from_an_old_protocol_is_ignored(host: TwinHost) -> None:
    await host.apply([telemetry("w-2", T0, "coap", temperature=1.0)])
    assert await host.device_offline("w-2", protocol="mqtt") is False
    assert (await host.get("w-2"))["connectivity"]["online"] is True


async def test_anomaly_events_when_the_verdict_flips(host: TwinHost, hub: EventHub) -> None:
    steady = [telemetry("a-1", T0 + k, temperature=20.0 + 0.1 * (k % 4)) for k in range(40)]
    await host.apply(steady)
    await host.apply([telemetry("a-1", T0 + 41, temperature=90.0)])
    await host.apply([telemetry("a-1", T0 + 42, temperature=20.1)])
    flips = [d["anomalous"] for _, d in await events_of(host, hub, "anomaly")]
    assert flips == [True, False]


async def test_desired_changes_are_events_with_the_device_document(
    host: TwinHost, hub: EventHub
) -> None:
    await host.apply([telemetry("d-1", T0, temperature=1.0)])
    await host.patch_desired("d-1", {"sample_interval": 5})
    await host.patch_desired("d-1", {"sample_interval": 5})  # no change, no event
    desired = await events_of(host, hub, "desired")
    assert desired == [
        ("d-1", {"version": 2, "desired": {"sample_interval": 5}, "delta": {"sample_interval": 5}})
    ]
    assert await host.desired("d-1") == desired[0][1]


async def test_command_round_trip(host: TwinHost, hub: EventHub) -> None:
    await host.apply([telemetry("c-1", T0, temperature=1.0)])
    sending = asyncio.create_task(
        host.send_command("c-1", {"name": "ping", "params": {"n": 1}, "timeout_s": 5})
    )
    for _ in range(100):
        await asyncio.sleep(0.01)
        claimed = await host.claim_commands("c-1", protocol="mqtt")
        if claimed:
            break
    assert [(c["name"], c["params"]) for c in claimed] == [("ping", {"n": 1})]
    assert await host.claim_commands("c-1", protocol="mqtt") == []  # delivered once
    record = await host.command_response(
        "c-1", claimed[0]["id"], {"status": "ok", "result": {"pong": 1}}
    )
    assert record["status"] == "succeeded"
    answered = await sending
    assert (answered["status"], answered["result"]) == ("succeeded", {"pong": 1})
    statuses = [d["status"] for _, d in await events_of(host, hub, "command")]
    assert statuses == ["queued", "sent", "succeeded"]
    again = await host.get_command("c-1", claimed[0]["id"])
    assert again["status"] == "succeeded"


async def test_unanswered_command_returns_after_its_timeout(host: TwinHost) -> None:
    await host.apply([telemetry("c-2", T0, temperature=1.0)])
    record = await host.send_command("c-2", {"name": "reboot", "timeout_s": 0.05})
    assert record["status"] == "queued"
    failed = await host.command_response("c-2", record["id"], {"status": "error", "error": "busy"})
    assert (failed["status"], failed["error"]) == ("failed", "busy")


async def test_commands_expire_or_time_out_with_their_ttl(
    host: TwinHost, hub: EventHub, clock: FakeClock
) -> None:
    await host.apply([telemetry("c-3", T0, temperature=1.0)])
    queued = await host.send_command("c-3", {"name": "a", "timeout_s": 0, "ttl_s": 60})
    sent = await host.send_command("c-3", {"name": "b", "timeout_s": 0, "ttl_s": 60})
    await host.claim_commands("c-3", protocol="mqtt", ids=[sent["id"]])
    clock.now += 61
    await host.sweep()
    assert (await host.get_command("c-3", queued["id"]))["status"] == "expired"
    assert (await host.get_command("c-3", sent["id"]))["status"] == "timed_out"
    assert await host.claim_commands("c-3", protocol="mqtt") == []
    statuses = [d["status"] for _, d in await events_of(host, hub, "command")]
    assert statuses[-2:] == ["expired", "timed_out"]


async def test_commands_survive_passivation(host: TwinHost) -> None:
    await host.apply([telemetry("c-4", T0, temperature=1.0)])
    record = await host.send_command("c-4", {"name": "ping", "timeout_s": 0})
    assert await host.passivate(["c-4"]) == 1
    claimed = await host.claim_commands("c-4", protocol="coap")
    assert [c["id"] for c in claimed] == [record["id"]]


async def test_command_errors(host: TwinHost) -> None:
    with pytest.raises(TwinNotFound):
        await host.send_command("ghost", {"name": "ping", "timeout_s": 0})
    await host.apply([telemetry("c-5", T0, temperature=1.0)])
    with pytest.raises(InvalidRequest, match="name"):
        await host.send_command("c-5", {"name": "no spaces", "timeout_s": 0})
    with pytest.raises(InvalidRequest, match="ttl_s"):
        await host.send_command("c-5", {"name": "x", "timeout_s": 0, "ttl_s": 0})
    with pytest.raises(UnknownCommand):
        await host.command_response("c-5", "nope", {"status": "ok"})
    with pytest.raises(UnknownCommand):
        await host.get_command("c-5", "nope")


async def test_hub_poll_filters_resumes_and_waits(hub: EventHub) -> None:
    from twinfleet.runtime import Event

    await hub.publish([Event("desired", "a", {}), Event("presence", "b", {})])
    assert [e.id for e in await hub.poll(0)] == [1, 2]
    assert [e.id for e in await hub.poll(1)] == [2]
    assert [e.twin_id for e in await hub.poll(0, types={"presence"})] == ["b"]
    assert await hub.poll(2, timeout=0.01) == []
    waiting = asyncio.create_task(hub.poll(2, timeout=5))
    await asyncio.sleep(0.01)
    await hub.publish([Event("twin", "c", {"x": 1})])
    assert [e.twin_id for e in await waiting] == ["c"]
