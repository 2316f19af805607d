"""``CallLedger`` and the host calls that carry a ``call_id``: each applied once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from helpers import FakeClock, settle

from twinfleet.runtime.host import CallLedger, HostSettings, TwinHost
from twinfleet.runtime.stores import MemoryStore
from twinfleet.runtime.stores.base import Change
from twinfleet.twins import StoreUnavailable, VersionConflict

T0 = 1_700_000_000.0
QUIET = HostSettings(flush_interval_s=3600.0, sweep_interval_s=3600.0, event_interval_s=3600.0)


class CountingStore(MemoryStore):
    """A ``MemoryStore`` that counts commits and fails the next ones on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[str] = []  # ids of the snapshots committed, in order
        self.fail_commits: list[Exception] = []  # raised by the next commits, one each

    def commit_many(self, changes: Sequence[Change]) -> None:
        """Fail if told to, else record and commit."""
        if self.fail_commits:
            raise self.fail_commits.pop(0)
        self.commits.extend(snapshot["id"] for snapshot, _ in changes)
        super().commit_many(changes)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
async def host(no_ray: None, store: CountingStore, clock: FakeClock) -> AsyncIterator[TwinHost]:
    """A host on the fake clock with quiet loops, stopped afterwards."""
    twin_host = TwinHost("h", store, settings=QUIET, clock=clock)
    yield twin_host
    await twin_host.stop()


Calls = list[str]


def counted(calls: Calls, answer: Any = None, *, error: Exception | None = None) -> Any:
    """A call that notes each time it runs, then answers (a fresh copy) or raises."""

    async def call() -> Any:
        calls.append("ran")
        await asyncio.sleep(0)
        if error is not None:
            raise error
        return {"answer": answer, "seen": []}

    return call


async def test_without_a_call_id_every_call_runs(no_ray: None) -> None:
    ledger = CallLedger()
    calls: Calls = []
    for _ in range(2):
        assert await ledger.once("m", None, counted(calls, 1)) == {"answer": 1, "seen": []}
    assert calls == ["ran", "ran"]
    assert len(ledger) == 0


async def test_a_repeated_call_id_gets_the_first_answer_without_running_again(
    no_ray: None,
) -> None:
    ledger = CallLedger()
    calls: Calls = []
    first = await ledger.once("m", "id-1", counted(calls, 1))
    first["seen"].append("the caller changed its answer")
    again = await ledger.once("m", "id-1", counted(calls, 2))
    assert again == {"answer": 1, "seen": []}  # the first answer, as it was given
    assert calls == ["ran"]
    # Another id, or the same id of another method, is another call.
    assert (await ledger.once("m", "id-2", counted(calls, 3)))["answer"] == 3
    assert (await ledger.once("other", "id-1", counted(calls, 4)))["answer"] == 4
    assert calls == ["ran"] * 3
    assert len(ledger) == 3


async def test_a_repeated_call_id_raises_the_first_error_again(no_ray: None) -> None:
    ledger = CallLedger()
    calls: Calls = []
    with pytest.raises(VersionConflict):
        await ledger.once("m", "id-1", counted(calls, error=VersionConflict("t", 1, 2)))
    with pytest.raises(VersionConflict):
        await ledger.once("m", "id-1", counted(calls, 1))  # would succeed now: not run
    assert calls == ["ran"]


async def test_a_resend_while_the_first_runs_waits_for_its_answer(no_ray: None) -> None:
    ledger = CallLedger()
    release = asyncio.Event()
    calls: Calls = []

    async def slow() -> dict[str, Any]:
        calls.append("ran")
        await release.wait()
        return {"answer": "first"}

    first = asyncio.create_task(ledger.once("m", "id-1", slow))
    resends = [asyncio.create_task(ledger.once("m", "id-1", slow)) for _ in range(3)]
    await settle()
    assert calls == ["ran"]
    assert not any(t.done() for t in (first, *resends))
    release.set()
    answers = await asyncio.gather(first, *resends)
    assert answers == [{"answer": "first"}] * 4
    assert len({id(a) for a in answers}) == 4  # each caller its own copy
    assert calls == ["ran"]


async def test_concurrent_duplicates_of_a_failing_call_all_see_its_error(no_ray: None) -> None:
    ledger = CallLedger()
    calls: Calls = []
    call = counted(calls, error=StoreUnavailable("down"))
    results = await asyncio.gather(
        *(ledger.once("m", "id-1", call) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert calls == ["ran"]


async def test_a_caller_that_gives_up_does_not_stop_the_call(no_ray: None) -> None:
    ledger = CallLedger()
    release = asyncio.Event()
    calls: Calls = []

    async def slow() -> str:
        calls.append("ran")
        await release.wait()
        calls.append("finished")
        return "done"

    first = asyncio.create_task(ledger.once("m", "id-1", slow))
    await settle()
    first.cancel()  # a lost connection: the caller is gone, its resend comes
    with pytest.raises(asyncio.CancelledError):
        await first
    resend = asyncio.create_task(ledger.once("m", "id-1", slow))
    await settle()
    release.set()
    assert await resend == "done"
    assert calls == ["ran", "finished"]


async def test_call_ids_are_forgotten_after_the_ttl(no_ray: None) -> None:
    clock = FakeClock(T0)
    ledger = CallLedger(ttl_s=600.0, clock=clock)
    calls: Calls = []
    await ledger.once("m", "id-1", counted(calls, 1))
    clock.advance(599)
    await ledger.once("m", "id-1", counted(calls, 2))
    assert calls == ["ran"]
    clock.advance(2)
    assert len(ledger) == 0
    assert (await ledger.once("m", "id-1", counted(calls, 3)))["answer"] == 3
    assert calls == ["ran", "ran"]


async def test_only_the_newest_call_ids_are_kept(no_ray: None) -> None:
    ledger = CallLedger(capacity=2)
    calls: Calls = []
    for n in range(3):
        await ledger.once("m", f"id-{n}", counted(calls, n))
    assert len(ledger) == 2
    assert (await ledger.once("m", "id-2", counted(calls, 9)))["answer"] == 2  # kept
    assert (await ledger.once("m", "id-0", counted(calls, 9)))["answer"] == 9  # forgotten
    assert len(calls) == 4


async def test_a_running_call_is_never_forgotten(no_ray: None) -> None:
    clock = FakeClock(T0)
    ledger = CallLedger(capacity=1, ttl_s=10.0, clock=clock)
    release = asyncio.Event()
    calls: Calls = []

    async def slow() -> str:
        calls.append("ran")
        await release.wait()
        return "slow"

    first = asyncio.create_task(ledger.once("m", "slow", slow))
    await settle()
    for n in range(3):  # more finished calls than it keeps, and more time than it keeps them
        await ledger.once("m", f"id-{n}", counted(calls, n))
        clock.advance(60)
    resend = asyncio.create_task(ledger.once("m", "slow", slow))
    await settle()
    release.set()
    assert await asyncio.gather(first, resend) == ["slow", "slow"]
    assert calls.count("ran") == 4  # slow once, and the three others


def test_a_ledger_needs_room(no_ray: None) -> None:
    with pytest.raises(ValueError, match="capacity"):
        CallLedger(capacity=0)
    with pytest.raises(ValueError, match="ttl_s"):
        CallLedger(ttl_s=0)


# -- the host calls that carry a call id ------------------------------------------------------


async def test_send_command_twice_with_one_call_id_queues_one_command(
    host: TwinHost, store: CountingStore
) -> None:
    await host.register({"id": "c-1", "type": "smart-sensor"})
    request = {"name": "reboot", "timeout_s": 0}
    first = await host.send_command("c-1", request, call_id="call-1")
    again = await host.send_command("c-1", request, call_id="call-1")
    assert again == first
    assert first["status"] == "queued"
    assert (await host.stats())["commands_queued"] == 1
    assert store.commits == ["c-1", "c-1"]  # the registration and one command
    claimed = await host.claim_commands("c-1", protocol="mqtt")
    assert [c["id"] for c in claimed] == [first["id"]]
    # A new call id is a new command.
    other = await host.send_command("c-1", request, call_id="call-2")
    assert other["id"] != first["id"]
    assert (await host.stats())["commands_queued"] == 2


async def test_a_resent_command_waits_with_the_first_for_the_devices_answer(
    host: TwinHost,
) -> None:
    await host.register({"id": "c-1", "type": "smart-sensor"})
    request = {"name": "reboot", "timeout_s": 30}
    first = asyncio.create_task(host.send_command("c-1", request, call_id="call-1"))
    await settle()
    resend = asyncio.create_task(host.send_command("c-1", request, call_id="call-1"))
    (claimed,) = await host.claim_commands("c-1", protocol="mqtt")
    await host.command_response("c-1", claimed["id"], {"status": "ok", "result": {"up": True}})
    records = await asyncio.gather(first, resend)
    assert [r["status"] for r in records] == ["succeeded", "succeeded"]
    assert records[0] == records[1]
    assert (await host.stats())["commands_queued"] == 1


async def test_register_twice_with_one_call_id_commits_once(
    host: TwinHost, store: CountingStore
) -> None:
    entry = {"id": "r-1", "type": "smart-meter", "tags": {"site": "n"}}
    first = await host.register(entry, call_id="call-1")
    again = await host.register(entry, call_id="call-1")
    assert again == first
    assert store.commits == ["r-1"]


async def test_a_repeated_patch_gets_the_first_answer_even_after_later_writes(
    host: TwinHost, store: CountingStore
) -> None:
    first = await host.patch_desired("d-1", {"rate": 1}, call_id="call-1")
    await host.patch_desired("d-1", {"rate": 2})
    again = await host.patch_desired("d-1", {"rate": 1}, call_id="call-1")
    assert again == first
    assert (await host.get("d-1"))["desired"] == {"rate": 2}  # not patched back to 1
    tags = await host.patch_tags("d-1", {"zone": "a"}, call_id="call-2")
    await host.patch_tags("d-1", {"zone": None})
    assert await host.patch_tags("d-1", {"zone": "a"}, call_id="call-2") == tags
    assert (await host.get("d-1"))["tags"] == {}
    assert len(store.commits) == 4


async def test_a_repeated_lifecycle_move_is_not_made_again(
    host: TwinHost, store: CountingStore
) -> None:
    await host.register({"id": "l-1", "type": "smart-sensor"})
    entry = {"id": "l-1", "type": "smart-sensor"}
    suspended = await host.set_lifecycle("l-1", "suspended", registry=entry, call_id="call-1")
    await host.set_lifecycle("l-1", "active", registry=entry)
    again = await host.set_lifecycle("l-1", "suspended", registry=entry, call_id="call-1")
    assert again == suspended
    assert (await host.get("l-1"))["lifecycle"] == "active"
    assert len(store.commits) == 3


async def test_a_write_whose_commit_failed_fails_again_for_its_call_id(
    host: TwinHost, store: CountingStore
) -> None:
    store.fail_commits.append(ConnectionError("down"))
    with pytest.raises(StoreUnavailable):
        await host.patch_desired("d-1", {"rate": 1}, call_id="call-1")
    with pytest.raises(StoreUnavailable):  # the store works again: the answer stays
        await host.patch_desired("d-1", {"rate": 1}, call_id="call-1")
    assert store.commits == []
    doc = await host.patch_desired("d-1", {"rate": 1}, call_id="call-2")  # a new call
    assert doc["desired"] == {"rate": 1}
