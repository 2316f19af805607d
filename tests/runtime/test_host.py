"""``TwinHost`` as plain asyncio logic: no Ray, no network, a fake clock and an in-memory store."""

from __future__ import annotations

import asyncio
import math
import pickle
import sys
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import pytest
from helpers import FakeClock, eventually, nested, telemetry

from twinfleet.errors import InvalidRequest
from twinfleet.models import default_registry
from twinfleet.runtime.host import HostSettings, TwinHost
from twinfleet.runtime.host import history as history_module
from twinfleet.runtime.host.delays import LAG_BUCKETS, SAMPLES_PER_BATCH
from twinfleet.runtime.messages import ApplyResult, DeviceMessage
from twinfleet.runtime.placement import Placement
from twinfleet.runtime.stores import MemoryStore, StateStore
from twinfleet.runtime.stores.base import Change
from twinfleet.runtime.telemetry import MemoryTelemetrySink
from twinfleet.twins import (
    InvalidDeviceId,
    InvalidPatch,
    StoreUnavailable,
    Twin,
    TwinFilter,
    TwinNotFound,
    UnknownModel,
    VersionConflict,
)

T0 = 1_700_000_000.0

# Loops that never fire on their own: tests call flush() and sweep() when they mean to.
QUIET = HostSettings(flush_interval_s=3600.0, sweep_interval_s=3600.0, idle_timeout_s=600.0)


class RecordingStore(MemoryStore):
    """A ``MemoryStore`` that records writes and fails them on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.saves: list[list[str]] = []  # ids of each save_many call
        self.commits: list[tuple[str, dict[str, Any] | None]] = []  # (id, registry) committed
        self.fail_commits: list[Exception] = []  # raised by the next commits, one each
        self.fail_saves: list[Exception] = []  # raised by the next save_many calls, one each
        self.closed = False

    def save_many(self, snapshots: Sequence[Mapping[str, Any]]) -> None:
        """Record the call, fail if told to, else save."""
        if self.fail_saves:
            raise self.fail_saves.pop(0)
        self.saves.append([s["id"] for s in snapshots])
        super().save_many(snapshots)

    def commit_many(self, changes: Sequence[Change]) -> None:
        """Record the call, fail if told to, else commit."""
        if self.fail_commits:
            raise self.fail_commits.pop(0)
        self.commits.extend(
            (snapshot["id"], None if registry is None else dict(registry))
            for snapshot, registry in changes
        )
        super().commit_many(changes)

    def close(self) -> None:
        """Remember that the host closed us."""
        self.closed = True
        super().close()

    def stored(self, twin_id: str) -> dict[str, Any] | None:
        """The snapshot of ``twin_id`` in the store, if any."""
        return self.load_many([twin_id]).get(twin_id)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
def ray_stays_down(no_ray: None) -> Iterator[None]:
    """``no_ray`` forbids ``ray.init``; also check that the test did not bring Ray up."""
    ray = sys.modules.get("ray")
    was_up = ray is not None and ray.is_initialized()  # a session-wide Ray of other tests
    yield
    ray = sys.modules.get("ray")
    assert was_up or ray is None or not ray.is_initialized()


@pytest.fixture
async def host(
    ray_stays_down: None, store: RecordingStore, clock: FakeClock
) -> AsyncIterator[TwinHost]:
    """A host on the fake clock with quiet loops, stopped afterwards."""
    twin_host = TwinHost("h", store, settings=QUIET, clock=clock)
    yield twin_host
    if not store.closed:
        await twin_host.stop()


def reading(i: int) -> float:
    """A noisy but ordinary temperature."""
    return 20.0 + 0.5 * math.sin(i) + 0.1 * (i % 3)


# -- device messages ------------------------------------------------------------------------------


async def test_apply_creates_twins_typed_by_the_message(
    host: TwinHost, store: RecordingStore
) -> None:
    result = await host.apply(
        [
            telemetry("s-1", T0 - 5, temperature=21.5),
            DeviceMessage("m-1", "reported", {"firmware": {"version": "1.0"}}, None, "coap"),
            DeviceMessage("w-1", "telemetry", {"flow": 1.5}, None, None, "smart-meter.water"),
        ]
    )
    assert result == ApplyResult(3, 0, ())
    sensor = await host.get("s-1")
    assert sensor["type"] == "smart-sensor"
    assert sensor["reported"] == {"temperature": 21.5}
    assert sensor["metadata"]["reported"] == {"temperature": T0 - 5}
    assert sensor["connectivity"] == {"online": True, "last_seen": T0, "protocol": "mqtt"}
    assert sensor["anomaly"]["model"] == "ewma"
    assert sensor["version"] == 1
    generic = await host.get("m-1")
    assert generic["type"] == "generic"
    assert generic["firmware"]["current"] == "1.0"
    assert (await host.get("w-1"))["type"] == "smart-meter.water"
    counters = await host.stats()
    assert (counters["created"], counters["applied"], counters["active"]) == (3, 3, 3)


async def test_first_message_of_a_batch_picks_the_type(host: TwinHost) -> None:
    await host.apply(
        [telemetry("x", temperature=1.0), telemetry("x", device_type="smart-meter", power=2.0)]
    )
    doc = await host.get("x")
    assert doc["type"] == "smart-sensor"
    assert doc["reported"] == {"temperature": 1.0, "power": 2.0}


async def test_apply_updates_existing_twins(host: TwinHost) -> None:
    await host.apply([telemetry("s-1", T0 - 10, temperature=20.0, humidity=40.0)])
    result = await host.apply([telemetry("s-1", T0 - 1, temperature=22.0)])
    assert result == ApplyResult(1, 0, ())
    doc = await host.get("s-1")
    assert doc["reported"] == {"temperature": 22.0, "humidity": 40.0}
    assert doc["metadata"]["reported"] == {"temperature": T0 - 1, "humidity": T0 - 10}
    assert doc["version"] == 2
    assert (await host.stats())["created"] == 1


async def test_older_readings_count_as_stale(host: TwinHost) -> None:
    await host.apply([telemetry("s-1", T0 - 1, temperature=22.0)])
    result = await host.apply(
        [telemetry("s-1", T0 - 100, temperature=5.0), telemetry("s-1", temperature=None, ts=None)]
    )
    # the first is older than what the twin holds; a telemetry null is dropped, changes nothing
    assert result == ApplyResult(0, 2, ())
    doc = await host.get("s-1")
    assert doc["reported"] == {"temperature": 22.0}
    assert doc["version"] == 1
    counters = await host.stats()
    assert (counters["applied"], counters["stale"]) == (1, 2)


async def test_a_ts_in_the_payload_wins(host: TwinHost) -> None:
    await host.apply([telemetry("s-1", T0 - 1, temperature=22.0)])
    message = DeviceMessage("s-1", "telemetry", {"temperature": 5.0, "ts": T0 - 50}, T0)
    result = await host.apply([message])
    assert result == ApplyResult(0, 1, ())
    assert (await host.get("s-1"))["reported"] == {"temperature": 22.0}


async def test_bad_messages_are_rejected_one_by_one(host: TwinHost, store: RecordingStore) -> None:
    batch = [
        telemetry("good-1", temperature=1.0),
        telemetry("bad id!", temperature=1.0),
        telemetry("x" * 129, temperature=1.0),
        DeviceMessage(None, "telemetry", {"t": 1.0}),  # type: ignore[arg-type]
        DeviceMessage(42, "telemetry", {"t": 1.0}),  # type: ignore[arg-type]
        DeviceMessage("good-1", "reported", ["not", "an", "object"]),  # type: ignore[arg-type]
        telemetry("good-1", temperature=math.nan),
        telemetry("good-1", counter=2**70),
        DeviceMessage("good-1", "telemetry", {"ts": "yesterday", "temperature": 3.0}),
        DeviceMessage("good-1", "reported", {"deep": nested(13)}),
        telemetry("good-2", humidity=50.0),
        telemetry("good-1", T0 + 1, temperature=2.0),
    ]
    result = await host.apply(batch)
    assert (result.applied, result.stale) == (3, 0)
    codes = [(r.device_id, r.code) for r in result.rejected]
    assert sorted(codes) == sorted(
        [
            ("bad id!", "invalid_device_id"),
            ("x" * 129, "invalid_device_id"),
            ("None", "invalid_device_id"),
            ("42", "invalid_device_id"),
            ("good-1", "invalid_patch"),
            ("good-1", "invalid_patch"),
            ("good-1", "invalid_patch"),
            ("good-1", "invalid_timestamp"),
            ("good-1", "nesting_too_deep"),
        ]
    )
    assert all(r.message for r in result.rejected)
    assert (await host.get("good-1"))["reported"] == {"temperature": 2.0}
    assert (await host.get("good-2"))["reported"] == {"humidity": 50.0}
    assert sorted(host.active_ids()) == ["good-1", "good-2"]
    with pytest.raises(InvalidDeviceId):
        await host.get("bad id!")
    assert (await host.stats())["rejected"] == 9


async def test_a_bad_message_ts_is_rejected_and_does_not_poison_the_twin(host: TwinHost) -> None:
    result = await host.apply([telemetry("n-1", "yesterday", temperature=1.0)])  # type: ignore[arg-type]
    assert [r.code for r in result.rejected] == ["invalid_timestamp"]
    result = await host.apply([telemetry("n-1", T0, temperature=2.0)])
    assert result == ApplyResult(1, 0, ())
    assert (await host.get("n-1"))["reported"] == {"temperature": 2.0}


async def test_an_rfc3339_message_ts_is_parsed(host: TwinHost) -> None:
    await host.apply([telemetry("n-2", "2030-01-01T00:00:00Z", temperature=1.0)])  # type: ignore[arg-type]
    doc = await host.get("n-2")
    assert doc["metadata"]["reported"]["temperature"] == 1893456000.0


async def test_apply_packed_takes_a_pickled_list_of_tuples(host: TwinHost) -> None:
    messages = [
        telemetry("p-1", T0 - 2, temperature=20.0),
        telemetry("p-2", T0 - 2, device_type="smart-meter", power=3.0),
        telemetry("p-1", T0 - 3, temperature=19.0),  # stale
        telemetry("bad id", temperature=1.0),
    ]
    blob = pickle.dumps([tuple(m) for m in messages], protocol=pickle.HIGHEST_PROTOCOL)
    result = await host.apply_packed(blob)
    assert (result.applied, result.stale) == (2, 1)
    assert [(r.device_id, r.code) for r in result.rejected] == [("bad id", "invalid_device_id")]
    assert (await host.get("p-1"))["reported"] == {"temperature": 20.0}
    assert (await host.get("p-2"))["type"] == "smart-meter"


async def test_apply_loads_a_stored_twin_instead_of_creating_one(
    host: TwinHost, store: RecordingStore, clock: FakeClock
) -> None:
    old = Twin("s-1", device_type="smart-sensor", tags={"site": "n"}, now=T0 - 1000)
    old.apply_message("telemetry", {"humidity": 30.0}, now=T0 - 1000)
    store.save_many([old.snapshot()])
    await host.apply([telemetry("s-1", device_type="smart-meter", temperature=21.0)])
    doc = await host.get("s-1")
    assert doc["type"] == "smart-sensor"
    assert doc["tags"] == {"site": "n"}
    assert doc["reported"] == {"humidity": 30.0, "temperature": 21.0}
    assert doc["version"] == 2
    counters = await host.stats()
    assert (counters["activated"], counters["created"]) == (1, 0)


# -- reads ----------------------------------------------------------------------------------------


async def test_get_unknown_raises_and_creates_nothing(
    host: TwinHost, store: RecordingStore
) -> None:
    with pytest.raises(TwinNotFound) as caught:
        await host.get("ghost")
    assert caught.value.twin_id == "ghost"
    with pytest.raises(TwinNotFound):
        await host.get("ghost")  # still not there: the first get made nothing
    assert host.active_ids() == []
    assert await host.flush() == 0
    assert store.count() == 0
    assert (await host.query(TwinFilter())).items == ()
    counters = await host.stats()
    assert (counters["created"], counters["activated"]) == (0, 0)


async def test_get_rejects_an_invalid_id(host: TwinHost) -> None:
    with pytest.raises(InvalidDeviceId):
        await host.get("no spaces")


async def test_get_activates_a_stored_twin(host: TwinHost, store: RecordingStore) -> None:
    stored = Twin("s-9", device_type="vehicle-tracker", now=T0 - 50)
    stored.patch_desired({"interval": 10}, now=T0 - 50)
    store.save_many([stored.snapshot()])
    doc = await host.get("s-9")
    expected = stored.document()
    # Stored without a model: it gets its family's default as it wakes (not a new version).
    assert doc["anomaly"] == {
        **expected["anomaly"],
        "model": "ewma",
        "version": "1",
        "source": "default",
    }
    assert {**doc, "anomaly": None} == {**expected, "anomaly": None}
    assert host.active_ids() == ["s-9"]


async def test_activate_loads_only_stored_twins(host: TwinHost, store: RecordingStore) -> None:
    store.save_many([Twin(i, now=T0).snapshot() for i in ("a", "b")])
    assert await host.activate(["a", "b", "c"]) == 2
    assert sorted(host.active_ids()) == ["a", "b"]
    assert await host.activate(["a", "b"]) == 2  # already active: no reload
    assert (await host.stats())["activated"] == 2


# -- desired state --------------------------------------------------------------------------------


async def test_patch_desired_creates_a_missing_twin_durably(
    host: TwinHost, store: RecordingStore
) -> None:
    doc = await host.patch_desired("new-1", {"rate": 5}, device_type="smart-meter")
    assert doc["type"] == "smart-meter"
    assert doc["desired"] == {"rate": 5}
    assert doc["delta"] == {"rate": 5}
    assert doc["version"] == 1
    # committed before the answer, not write-behind
    assert store.commits == [("new-1", None)]
    saved = store.stored("new-1")
    assert saved is not None
    assert saved["desired"] == {"rate": 5}
    assert saved["version"] == 1
    assert await host.flush() == 0  # the commit covered everything


async def test_patch_desired_merges_with_expected_version(
    host: TwinHost, store: RecordingStore, clock: FakeClock
) -> None:
    await host.patch_desired("d-1", {"a": 1, "b": {"c": 2}})
    clock.advance(1)
    doc = await host.patch_desired("d-1", {"a": None, "b": {"d": 3}}, expected_version=1)
    assert doc["desired"] == {"b": {"c": 2, "d": 3}}
    assert doc["version"] == 2
    assert doc["metadata"]["desired"] == {"b": {"c": T0, "d": T0 + 1}}
    saved = store.stored("d-1")
    assert saved is not None
    assert saved["desired"] == {"b": {"c": 2, "d": 3}}


async def test_patch_desired_that_changes_nothing_commits_nothing(
    host: TwinHost, store: RecordingStore
) -> None:
    await host.patch_desired("d-1", {"a": 1})
    doc = await host.patch_desired("d-1", {"a": 1})
    assert doc["version"] == 1
    assert len(store.commits) == 1


async def test_version_conflict_changes_nothing(
    host: TwinHost, store: RecordingStore, clock: FakeClock
) -> None:
    await host.apply([telemetry("d-1", temperature=20.0)])
    await host.patch_desired("d-1", {"a": 1})
    await host.flush()
    before = await host.get("d-1")
    commits, saves = len(store.commits), len(store.saves)
    clock.advance(5)
    with pytest.raises(VersionConflict) as caught:
        await host.patch_desired("d-1", {"a": 2}, expected_version=before["version"] - 1)
    assert (caught.value.expected, caught.value.actual) == (before["version"] - 1, 2)
    assert await host.get("d-1") == before
    assert await host.flush() == 0
    assert (len(store.commits), len(store.saves)) == (commits, saves)


async def test_version_conflict_on_a_missing_twin_creates_nothing(
    host: TwinHost, store: RecordingStore
) -> None:
    with pytest.raises(VersionConflict):
        await host.patch_desired("ghost", {"a": 1}, expected_version=3)
    await host.flush()
    assert store.count() == 0
    with pytest.raises(TwinNotFound):
        await host.get("ghost")


async def test_patch_desired_rejects_an_invalid_id(host: TwinHost) -> None:
    with pytest.raises(InvalidDeviceId):
        await host.patch_desired("bad/id", {"a": 1})
    assert host.active_ids() == []


@pytest.mark.parametrize(
    "error",
    [ConnectionError("redis went away"), StoreUnavailable("sqlite is locked")],
    ids=["foreign", "typed"],
)
async def test_failed_commit_rolls_back(
    host: TwinHost, store: RecordingStore, clock: FakeClock, error: Exception
) -> None:
    await host.patch_desired("d-1", {"a": 1, "keep": {"x": 1}}, device_type="smart-sensor")
    before = await host.get("d-1")
    clock.advance(10)
    store.fail_commits.append(error)
    with pytest.raises(StoreUnavailable):
        await host.patch_desired("d-1", {"a": 2, "keep": None, "new": True})
    after = await host.get("d-1")
    for key in ("desired", "version", "delta", "tags", "type", "reported"):
        assert after[key] == before[key], key
    assert after["metadata"]["desired"] == before["metadata"]["desired"]
    saved = store.stored("d-1")
    assert saved is not None
    assert saved["desired"] == before["desired"]
    assert saved["version"] == before["version"]
    # a later flush writes the rolled-back state, never the failed change
    await host.flush()
    saved = store.stored("d-1")
    assert saved is not None
    assert saved["desired"] == before["desired"]
    # and the store works again for the next write
    doc = await host.patch_desired("d-1", {"a": 3}, expected_version=before["version"])
    assert doc["desired"] == {"a": 3, "keep": {"x": 1}}
    assert doc["version"] == before["version"] + 1


async def test_failed_commit_leaves_the_whole_document_as_before(
    host: TwinHost, store: RecordingStore, clock: FakeClock
) -> None:
    await host.patch_desired("d-1", {"a": 1})
    before = await host.get("d-1")
    clock.advance(10)
    store.fail_commits.append(ConnectionError("down"))
    with pytest.raises(StoreUnavailable):
        await host.patch_desired("d-1", {"a": 2})
    assert await host.get("d-1") == before


async def test_failed_commit_does_not_undo_a_concurrent_acknowledged_patch(
    host: TwinHost, store: RecordingStore
) -> None:
    await host.patch_desired("d-1", {"base": 0})
    store.fail_commits.append(ConnectionError("blip"))
    first, second = await asyncio.gather(
        host.patch_desired("d-1", {"a": 1}),
        host.patch_desired("d-1", {"b": 2}),
        return_exceptions=True,
    )
    assert isinstance(first, StoreUnavailable)
    assert isinstance(second, dict)
    assert second["desired"]["b"] == 2
    await host.flush()
    doc = await host.get("d-1")
    saved = store.stored("d-1")
    assert saved is not None
    assert doc["desired"] == saved["desired"] == {"base": 0, "b": 2}


async def test_failed_commit_keeps_the_twin_dirty_for_reported_state(
    host: TwinHost, store: RecordingStore
) -> None:
    await host.apply([telemetry("d-1", temperature=20.0)])
    store.fail_commits.append(ConnectionError("down"))
    with pytest.raises(StoreUnavailable):
        await host.patch_desired("d-1", {"a": 1})
    # the commit would have carried the reported reading: the flush must still write it
    assert await host.flush() == 1
    saved = store.stored("d-1")
    assert saved is not None
    assert saved["reported"] == {"temperature": 20.0}
    assert saved["desired"] == {}


# -- tags and registry ----------------------------------------------------------------------------


async def test_patch_tags_is_durable_and_needs_an_existing_twin(
    host: TwinHost, store: RecordingStore
) -> None:
    with pytest.raises(TwinNotFound):
        await host.patch_tags("nope", {"site": "a"})
    await host.apply([telemetry("t-1", temperature=1.0)])
    doc = await host.patch_tags("t-1", {"site": "a", "floor": 2})
    assert doc["tags"] == {"site": "a", "floor": 2}
    saved = store.stored("t-1")
    assert saved is not None
    assert saved["tags"] == {"site": "a", "floor": 2}
    with pytest.raises(VersionConflict):
        await host.patch_tags("t-1", {"site": "b"}, expected_version=1)
    assert (await host.get("t-1"))["tags"] == {"site": "a", "floor": 2}


async def test_register_creates_the_twin_and_its_entry_in_one_commit(
    host: TwinHost, store: RecordingStore
) -> None:
    entry = {"id": "r-1", "type": "smart-meter.water", "tags": {"site": "north"}}
    doc = await host.register(entry)
    assert doc["type"] == "smart-meter.water"
    assert doc["tags"] == {"site": "north"}
    assert doc["anomaly"]["model"] == "ewma"
    assert store.commits == [("r-1", entry)]  # one commit carried snapshot and entry together
    assert store.get_registry("r-1") == entry
    saved = store.stored("r-1")
    assert saved is not None
    assert saved["type"] == "smart-meter.water"
    assert saved["tags"] == {"site": "north"}
    assert await host.flush() == 0


async def test_register_without_tags_still_commits_a_new_twin(
    host: TwinHost, store: RecordingStore
) -> None:
    entry = {"id": "r-2", "type": "patient-monitor", "tags": {}, "placement": "virtual"}
    await host.register(entry)
    assert store.get_registry("r-2") == entry
    assert store.stored("r-2") is not None


async def test_register_retypes_an_existing_twin(host: TwinHost, store: RecordingStore) -> None:
    await host.apply([telemetry("r-3", device_type=None, temperature=20.0)])
    assert (await host.get("r-3"))["type"] == "generic"
    doc = await host.register({"id": "r-3", "type": "smart-sensor.temperature"})
    assert doc["type"] == "smart-sensor.temperature"
    assert doc["reported"] == {"temperature": 20.0}
    assert store.get_registry("r-3") == {"id": "r-3", "type": "smart-sensor.temperature"}
    # the family (and so presence) follows the new type
    await host.sweep()
    assert (await host.get("r-3"))["connectivity"]["online"] is True


async def test_register_writes_the_entry_for_an_existing_clean_twin(
    host: TwinHost, store: RecordingStore
) -> None:
    await host.apply([telemetry("r-4", temperature=20.0)])  # created as a smart-sensor
    await host.flush()
    entry = {"id": "r-4", "type": "smart-sensor", "tags": {}, "placement": "dedicated"}
    await host.register(entry)
    assert store.get_registry("r-4") == entry


async def test_failed_register_leaves_the_version_as_before(
    host: TwinHost, store: RecordingStore
) -> None:
    await host.apply([telemetry("r-5", device_type=None, temperature=20.0)])
    before = await host.get("r-5")
    store.fail_commits.append(ConnectionError("down"))
    with pytest.raises(StoreUnavailable):
        await host.register({"id": "r-5", "type": "smart-sensor", "tags": {"site": "s"}})
    after = await host.get("r-5")
    assert (after["type"], after["tags"]) == (before["type"], before["tags"])
    assert store.get_registry("r-5") is None
    assert after["version"] == before["version"]


async def test_a_failed_lifecycle_move_is_undone(host: TwinHost, store: RecordingStore) -> None:
    await host.register({"id": "l-1", "type": "smart-sensor"})
    await host.apply([telemetry("l-1", temperature=20.0)])
    before = await host.get("l-1")
    store.fail_commits.append(ConnectionError("down"))
    with pytest.raises(StoreUnavailable):
        await host.set_lifecycle("l-1", "suspended", registry={"id": "l-1"})
    assert await host.get("l-1") == before
    assert store.get_registry("l-1") == {"id": "l-1", "type": "smart-sensor"}
    result = await host.apply([telemetry("l-1", T0 + 1, temperature=21.0)])
    assert result == ApplyResult(1, 0, ())  # still active: not refused


async def test_a_failed_model_change_leaves_the_verdict_as_before(
    host: TwinHost, store: RecordingStore, clock: FakeClock
) -> None:
    for i in range(30):
        clock.advance(1)
        await host.apply([telemetry("m-1", clock.now, temperature=reading(i))])
    await host.apply([telemetry("m-1", clock.now + 1, temperature=80.0)])
    before = await host.get("m-1")
    assert before["anomaly"]["anomalous"] is True
    store.fail_commits.append(ConnectionError("down"))
    with pytest.raises(StoreUnavailable):
        await host.set_model("m-1", "mad")
    assert await host.get("m-1") == before


# -- write-behind ---------------------------------------------------------------------------------


async def test_reported_state_is_written_behind(
    host: TwinHost, store: RecordingStore, clock: FakeClock
) -> None:
    await host.apply([telemetry("w-1", T0, temperature=20.0)])
    assert store.stored("w-1") is None
    assert await host.flush() == 1
    saved = store.stored("w-1")
    assert saved is not None
    assert saved["reported"] == {"temperature": 20.0}
    clock.advance(1)
    await host.apply([telemetry("w-1", T0 + 1, temperature=21.0)])
    saved = store.stored("w-1")
    assert saved is not None
    assert saved["reported"] == {"temperature": 20.0}  # still the old snapshot
    assert await host.flush() == 1
    saved = store.stored("w-1")
    assert saved is not None
    assert saved["reported"] == {"temperature": 21.0}
    assert store.commits == []  # reported state never takes the commit path


async def test_flush_writes_only_dirty_twins_in_batches(
    ray_stays_down: None, store: RecordingStore, clock: FakeClock
) -> None:
    settings = HostSettings(flush_interval_s=3600, sweep_interval_s=3600, flush_batch=3)
    host = TwinHost("h", store, settings=settings, clock=clock)
    try:
        await host.apply([telemetry(f"f-{i}", temperature=float(i)) for i in range(7)])
        assert await host.flush() == 7
        assert sorted(len(ids) for ids in store.saves) == [1, 3, 3]
        assert sorted(i for ids in store.saves for i in ids) == [f"f-{i}" for i in range(7)]
        assert store.count() == 7
        store.saves.clear()
        assert await host.flush() == 0
        assert store.saves == []
        clock.advance(1)
        await host.apply([telemetry("f-2", temperature=9.0), telemetry("f-5", temperature=9.0)])
        await host.apply([telemetry("f-2", T0 - 100, temperature=1.0)])  # stale: not dirty again
        assert await host.flush() == 2
        assert [sorted(ids) for ids in store.saves] == [["f-2", "f-5"]]
        counters = await host.stats()
        assert (counters["snapshots"], counters["flushes"], counters["dirty"]) == (9, 2, 0)
    finally:
        await host.stop()


async def test_a_failed_flush_keeps_twins_dirty(host: TwinHost, store: RecordingStore) -> None:
    await host.apply([telemetry("a", temperature=1.0), telemetry("b", temperature=2.0)])
    store.fail_saves.append(ConnectionError("down"))
    with pytest.raises(ConnectionError):
        await host.flush()
    assert (await host.stats())["dirty"] == 2
    assert store.count() == 0
    assert await host.flush() == 2
    assert store.count() == 2
    assert (await host.stats())["flush_errors"] == 1


# -- passivation ----------------------------------------------------------------------------------


async def test_sweep_passivates_idle_twins(
    ray_stays_down: None, store: RecordingStore, clock: FakeClock
) -> None:
    settings = HostSettings(flush_interval_s=3600, sweep_interval_s=3600, idle_timeout_s=60)
    host = TwinHost("h", store, settings=settings, clock=clock)
    try:
        await host.apply(
            [
                telemetry("idle", device_type=None, temperature=20.0),
                telemetry("busy", device_type=None, temperature=20.0),
            ]
        )
        clock.advance(40)
        await host.get("busy")  # a read counts as use
        assert await host.sweep() == (0, 0)
        clock.advance(40)
        assert await host.sweep() == (0, 1)
        assert host.active_ids() == ["busy"]
        saved = store.stored("idle")
        assert saved is not None
        assert saved["reported"] == {"temperature": 20.0}
        assert store.stored("busy") is None  # not passivated, still write-behind
        counters = await host.stats()
        assert (counters["active"], counters["passivated"]) == (1, 1)
        # a later message brings it back with its state
        await host.apply([telemetry("idle", device_type=None, humidity=30.0)])
        doc = await host.get("idle")
        assert doc["reported"] == {"temperature": 20.0, "humidity": 30.0}
        assert doc["version"] == 2
        assert (await host.stats())["activated"] == 1
    finally:
        await host.stop()


async def test_passivated_twin_keeps_its_model_state(
    ray_stays_down: None, store: RecordingStore, clock: FakeClock
) -> None:
    settings = HostSettings(flush_interval_s=3600, sweep_interval_s=3600, idle_timeout_s=60)
    host = TwinHost("h", store, settings=settings, clock=clock)
    # the same readings into a twin that never leaves memory
    ref = Twin("ref", device_type="smart-sensor", model=default_registry().create("ewma"), now=T0)
    ref.model_info = {"name": "ewma", "params": {}, "source": "default", "version": "1"}
    try:
        for i in range(30):
            clock.advance(1)
            await host.apply([telemetry("m-1", clock.now, temperature=reading(i))])
            ref.apply_message("telemetry", {"temperature": reading(i)}, now=clock.now, ts=clock.now)
        assert (await host.get("m-1"))["anomaly"] == ref.document()["anomaly"]
        clock.advance(31)  # offline first, then idle
        assert await host.sweep() == (1, 0)
        ref.mark_offline(now=clock.now)
        clock.advance(30)
        assert await host.sweep() == (0, 1)
        assert host.active_ids() == []
        saved = store.stored("m-1")
        assert saved is not None
        assert saved["model"] == ref.snapshot()["model"]
        scores = []
        for i in range(30, 40):
            value = 35.0 if i == 39 else reading(i)  # the last one is far off the mean
            clock.advance(1)
            await host.apply([telemetry("m-1", clock.now, temperature=value)])
            ref.apply_message("telemetry", {"temperature": value}, now=clock.now, ts=clock.now)
            doc = await host.get("m-1")
            assert doc["anomaly"] == ref.document()["anomaly"]
            scores.append(doc["anomaly"]["score"])
        assert doc["anomaly"]["anomalous"] is True
        assert 0 < max(scores[:-1]) < scores[-1]
        assert doc["reported"] == ref.document()["reported"]
    finally:
        await host.stop()


async def test_passivate_keeps_twins_that_cannot_be_saved(
    host: TwinHost, store: RecordingStore
) -> None:
    await host.apply([telemetry("a", temperature=1.0)])
    store.fail_saves.append(ConnectionError("down"))
    with pytest.raises(ConnectionError):
        await host.passivate(["a"])
    assert host.active_ids() == ["a"]
    assert await host.passivate(["a", "unknown"]) == 1
    assert store.stored("a") is not None


# -- presence -------------------------------------------------------------------------------------


async def test_sweep_marks_silent_twins_offline_after_their_family_interval(
    host: TwinHost, store: RecordingStore, clock: FakeClock
) -> None:
    # smart-sensor: reports every 10 s, offline after 3 intervals; generic: after 180 s
    await host.apply(
        [
            telemetry("sensor", temperature=20.0),
            telemetry("thing", device_type=None, temperature=20.0),
        ]
    )
    await host.flush()
    clock.advance(20)
    await host.apply([telemetry("chatty", temperature=20.0)])
    clock.advance(10)  # sensor silent for exactly 30 s: not yet
    assert await host.sweep() == (0, 0)
    assert (await host.get("sensor"))["connectivity"]["online"] is True
    clock.advance(1)
    assert await host.sweep() == (1, 0)
    sensor = await host.get("sensor")
    assert sensor["connectivity"] == {"online": False, "last_seen": T0, "protocol": "mqtt"}
    assert sensor["version"] == 2
    assert (await host.get("thing"))["connectivity"]["online"] is True
    assert (await host.get("chatty"))["connectivity"]["online"] is True
    assert await host.sweep() == (0, 0)  # already offline: no news
    # presence is written behind like reported state
    await host.flush()
    saved = store.stored("sensor")
    assert saved is not None
    assert saved["online"] is False
    # a message brings it back online
    await host.apply([telemetry("sensor", temperature=21.0)])
    assert (await host.get("sensor"))["connectivity"]["online"] is True
    assert (await host.stats())["offline"] == 1


async def test_a_backlog_inside_the_platform_marks_nobody_offline(
    host: TwinHost, clock: FakeClock
) -> None:
    # Two sensors (offline after 30 s) report every 10 s; the edge received each message on
    # time, but the host gets to them 100 s late (a backlog inside the platform).
    for step in range(12):
        received = T0 + 10 * step
        clock.set(received + 100)
        await host.apply(
            [telemetry(i, received=received, temperature=20.0 + step) for i in ("s-1", "s-2")]
        )
        assert await host.sweep() == (0, 0)
    twin = await host.get("s-1")
    assert twin["connectivity"]["online"] is True
    assert twin["connectivity"]["last_seen"] == T0 + 110  # the edge's time, not the host's
    # The backlog stays; s-2 really falls silent: offline once its silence, less the lag,
    # passes 30 s, and s-1 (still reporting) stays online.
    for step in range(12, 17):
        received = T0 + 10 * step
        clock.set(received + 100)
        await host.apply([telemetry("s-1", received=received, temperature=1.0)])
        await host.sweep()
    assert (await host.get("s-1"))["connectivity"]["online"] is True
    assert (await host.get("s-2"))["connectivity"]["online"] is False
    assert (await host.stats())["offline"] == 1


async def test_a_device_that_flaps_near_its_interval_gets_damped(
    host: TwinHost, clock: FakeClock
) -> None:
    # A sensor (offline after 30 s) whose messages come every 32 s: each gap is just past
    # the threshold. Without damping it would go offline and back every time.
    offline_marks = 0
    for step in range(10):
        clock.set(T0 + 32 * step)
        await host.apply([telemetry("slow", received=clock(), temperature=20.0)])
        clock.advance(31)
        offline_marks += (await host.sweep())[0]
    assert offline_marks == 1  # the first miss doubles its threshold; no flapping after


async def test_the_lag_of_one_protocol_does_not_hide_silence_on_another(
    host: TwinHost, clock: FakeClock
) -> None:
    clock.set(T0)
    await host.apply([telemetry("coap-dev", protocol="coap", received=T0, temperature=1.0)])
    for step in range(1, 6):
        clock.set(T0 + 10 * step)
        # MQTT messages arrive 200 s late; the CoAP device has gone silent
        late = [telemetry("mqtt-dev", received=clock() - 200, temperature=1.0)]
        await host.apply(late)
        await host.sweep()
    assert (await host.get("coap-dev"))["connectivity"]["online"] is False
    assert (await host.get("mqtt-dev"))["connectivity"]["online"] is True


async def test_lag_histograms_per_protocol_from_sampled_messages(
    host: TwinHost, clock: FakeClock
) -> None:
    clock.set(T0 + 1.5)
    await host.apply(
        [telemetry(f"d-{i}", ts=T0, received=T0 + 1.0, temperature=1.0) for i in range(10)]
        + [telemetry("c-1", ts=T0, protocol="coap", received=T0 + 1.4, temperature=1.0)]
    )
    lag = {(h["kind"], h["protocol"]): h for h in (await host.stats())["lag"]}
    received = lag[("received", "mqtt")]
    assert received["count"] == 10  # batches of up to 16: every message is a sample
    assert received["sum"] == pytest.approx(5.0)
    assert received["buckets"][LAG_BUCKETS.index(0.5)] == 10  # cumulative: all <= 0.5 s
    assert received["buckets"][LAG_BUCKETS.index(0.25)] == 0
    assert lag[("published", "mqtt")]["sum"] == pytest.approx(15.0)
    assert lag[("received", "coap")]["count"] == 1
    # a big batch gives at most 16 samples
    await host.apply([telemetry(f"d-{i}", received=T0 + 1.0, temperature=2.0) for i in range(800)])
    lag = {(h["kind"], h["protocol"]): h for h in (await host.stats())["lag"]}
    assert lag[("received", "mqtt")]["count"] == 10 + SAMPLES_PER_BATCH


# -- queries --------------------------------------------------------------------------------------


async def _fleet(host: TwinHost) -> None:
    """Ten twins: even ones active, odd ones passivated; types, tags and presence vary."""
    for i in range(10):
        kind = "smart-sensor.temperature" if i % 3 == 0 else "smart-meter"
        await host.register({"id": f"q-{i}", "type": kind, "tags": {"zone": "a" if i < 5 else "b"}})
        await host.apply([telemetry(f"q-{i}", device_type=None, temperature=20.0)])
    await host.flush()
    await host.passivate([f"q-{i}" for i in range(1, 10, 2)])


async def test_query_returns_live_and_stored_twins_in_id_order(
    host: TwinHost, clock: FakeClock
) -> None:
    await _fleet(host)
    page = await host.query(TwinFilter())
    assert [d["id"] for d in page.items] == [f"q-{i}" for i in range(10)]
    assert page.live == frozenset(f"q-{i}" for i in range(0, 10, 2))
    assert page.items[1]["tags"] == {"zone": "a"}
    assert page.items[1]["reported"] == {"temperature": 20.0}
    # a query reads stored twins without activating them
    assert sorted(host.active_ids()) == [f"q-{i}" for i in range(0, 10, 2)]
    only_live = await host.query(TwinFilter(), include_stored=False)
    assert [d["id"] for d in only_live.items] == [f"q-{i}" for i in range(0, 10, 2)]


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 10, 11])
async def test_query_pages_with_after_and_limit(
    host: TwinHost, clock: FakeClock, limit: int
) -> None:
    await _fleet(host)
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await host.query(TwinFilter(), after=after, limit=limit)
        assert len(page.items) <= limit
        seen.extend(d["id"] for d in page.items)
        if len(page.items) < limit:
            break
        after = page.items[-1]["id"]
    assert seen == [f"q-{i}" for i in range(10)]


async def test_query_after_skips_lower_ids(host: TwinHost, clock: FakeClock) -> None:
    await _fleet(host)
    page = await host.query(TwinFilter(), after="q-6", limit=100)
    assert [d["id"] for d in page.items] == ["q-7", "q-8", "q-9"]


async def test_query_with_limit_zero(host: TwinHost, clock: FakeClock) -> None:
    await _fleet(host)
    try:
        page = await host.query(TwinFilter(), limit=0)
    except ValueError:
        return
    assert page.items == ()


async def test_query_filters_by_type_tags_online_and_anomalous(
    host: TwinHost, clock: FakeClock
) -> None:
    await _fleet(host)

    async def ids(flt: TwinFilter) -> list[str]:
        return [d["id"] for d in (await host.query(flt)).items]

    sensors = ["q-0", "q-3", "q-6", "q-9"]
    assert await ids(TwinFilter(type="smart-sensor")) == sensors
    assert await ids(TwinFilter(type="smart-sensor.temperature")) == sensors
    assert await ids(TwinFilter(type="smart-meter")) == ["q-1", "q-2", "q-4", "q-5", "q-7", "q-8"]
    assert await ids(TwinFilter(type="smart")) == []
    assert await ids(TwinFilter(tags={"zone": "b"})) == ["q-5", "q-6", "q-7", "q-8", "q-9"]
    assert await ids(TwinFilter(type="smart-sensor", tags={"zone": "a"})) == ["q-0", "q-3"]
    assert await ids(TwinFilter(online=False)) == []
    assert await ids(TwinFilter(anomalous=True)) == []
    # sensors go offline after 30 s of silence, meters after 180 s; only live twins are swept
    clock.advance(31)
    await host.sweep()
    await host.flush()
    assert await ids(TwinFilter(online=False)) == ["q-0", "q-6"]
    assert await ids(TwinFilter(online=True, type="smart-sensor")) == ["q-3", "q-9"]
    # an anomalous live twin and an anomalous stored one
    for twin_id in ("q-2", "q-3"):
        for i in range(30):
            clock.advance(1)
            await host.apply([telemetry(twin_id, clock.now, temperature=reading(i))])
        await host.apply([telemetry(twin_id, clock.now + 1, temperature=80.0)])
    await host.flush()
    await host.passivate(["q-3"])
    assert await ids(TwinFilter(anomalous=True)) == ["q-2", "q-3"]
    assert await ids(TwinFilter(anomalous=True, tags={"zone": "a"}, type="smart-meter")) == ["q-2"]


async def test_query_respects_placement_for_stored_twins(
    host: TwinHost, store: RecordingStore
) -> None:
    placement = Placement(("h", "other"))
    mine = [i for i in (f"p-{n}" for n in range(40)) if placement.owner(i) == "h"][:3]
    theirs = [i for i in (f"p-{n}" for n in range(40)) if placement.owner(i) == "other"][:3]
    store.save_many([Twin(i, now=T0).snapshot() for i in mine + theirs])
    page = await host.query(TwinFilter(), placement=placement)
    assert [d["id"] for d in page.items] == sorted(mine)
    assert page.live == frozenset()
    # without a placement every stored twin counts
    page = await host.query(TwinFilter())
    assert [d["id"] for d in page.items] == sorted(mine + theirs)


async def test_query_scans_past_a_page_of_foreign_twins(
    host: TwinHost, store: RecordingStore
) -> None:
    placement = Placement(("h", "other"))
    all_ids = [f"z-{n:05d}" for n in range(2600)]  # more than one store page
    store.save_many([Twin(i, now=T0).snapshot() for i in all_ids])
    mine = [i for i in all_ids if placement.owner(i) == "h"]
    page = await host.query(TwinFilter(), placement=placement, limit=5000)
    assert [d["id"] for d in page.items] == mine
    page = await host.query(TwinFilter(), placement=placement, after=mine[1000], limit=7)
    assert [d["id"] for d in page.items] == mine[1001:1008]


async def test_query_prefers_the_live_twin_to_its_snapshot(
    host: TwinHost, store: RecordingStore
) -> None:
    await host.apply([telemetry("l-1", temperature=1.0)])
    await host.flush()
    await host.apply([telemetry("l-1", T0 + 5, temperature=2.0)])
    page = await host.query(TwinFilter())
    assert [d["reported"] for d in page.items] == [{"temperature": 2.0}]
    assert page.live == frozenset({"l-1"})
    # a live twin that no longer matches is not found through its stale snapshot either
    await host.patch_tags("l-1", {"zone": "x"})
    store.save_many([{**Twin("l-1", now=T0).snapshot(), "tags": {"zone": "old"}}])
    assert (await host.query(TwinFilter(tags={"zone": "old"}))).items == ()


# -- rebalancing and lifecycle --------------------------------------------------------------------


async def test_release_passivates_twins_the_host_no_longer_owns(
    host: TwinHost, store: RecordingStore
) -> None:
    twin_ids = [f"r-{n}" for n in range(30)]
    await host.apply([telemetry(i, temperature=1.0) for i in twin_ids])
    assert await host.release(Placement(("h",))) == 0
    placement = Placement(("h", "h2"))
    gone = [i for i in twin_ids if placement.owner(i) != "h"]
    assert gone  # 30 ids over two hosts: both get some
    assert await host.release(placement) == len(gone)
    assert sorted(host.active_ids()) == sorted(i for i in twin_ids if i not in gone)
    # the released twins are saved for their new host; the kept ones still wait for a flush
    assert sorted(store.load_many(twin_ids)) == sorted(gone)


async def test_stop_flushes_and_closes_the_store(
    ray_stays_down: None, store: RecordingStore, clock: FakeClock
) -> None:
    host = TwinHost("h", store, settings=QUIET, clock=clock)
    await host.start()
    await host.apply([telemetry("s-1", temperature=1.0), telemetry("s-2", temperature=2.0)])
    await host.patch_desired("s-3", {"a": 1})
    assert await host.stop() == 2
    assert store.closed
    assert sorted(store.load_many(["s-1", "s-2", "s-3"])) == ["s-1", "s-2", "s-3"]


async def test_the_loops_flush_and_sweep_on_their_own(ray_stays_down: None) -> None:
    store = RecordingStore()
    settings = HostSettings(flush_interval_s=0.02, sweep_interval_s=0.02, idle_timeout_s=3600)
    host = TwinHost("h", store, settings=settings)
    await host.start()
    await host.start()  # idempotent
    try:
        await host.apply([telemetry("loop-1", temperature=1.0)])
        await eventually(lambda: store.stored("loop-1") is not None, retry_errors=False)
        # a failing store does not kill the loop: the next round writes
        store.fail_saves.extend([ConnectionError("down")] * 3)
        await host.apply([telemetry("loop-1", temperature=2.0, ts=None)])
        await eventually(
            lambda: (store.stored("loop-1") or {}).get("reported") == {"temperature": 2.0},
            retry_errors=False,
        )
        assert not store.fail_saves
    finally:
        await host.stop()
    assert store.closed


async def test_the_sweep_loop_passivates(ray_stays_down: None) -> None:
    store = RecordingStore()
    settings = HostSettings(flush_interval_s=3600, sweep_interval_s=0.02, idle_timeout_s=0.05)
    host = TwinHost("h", store, settings=settings)
    try:
        await host.apply([telemetry("idle-1", temperature=1.0)])  # starts the loops
        await eventually(lambda: not host.active_ids(), retry_errors=False)
        assert store.stored("idle-1") is not None
    finally:
        await host.stop()


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="flush_interval_s"):
        HostSettings(flush_interval_s=0)
    with pytest.raises(ValueError, match="idle_timeout_s"):
        HostSettings(idle_timeout_s=-1)
    with pytest.raises(ValueError, match="batch"):
        HostSettings(flush_batch=0)
    with pytest.raises(ValueError, match="batch"):
        HostSettings(load_batch=0)


def test_the_store_fake_is_a_state_store() -> None:
    assert isinstance(RecordingStore(), StateStore)


# -- model assignment ---------------------------------------------------------------------------


async def test_a_family_assignment_switches_its_twins_but_not_those_with_their_own(
    host: TwinHost, store: RecordingStore, clock: FakeClock
) -> None:
    await host.apply(
        [
            telemetry("m-1", device_type="smart-meter", power=1.0),
            telemetry("m-2", device_type="smart-meter", power=1.0),
            telemetry("s-1", device_type="smart-sensor", temperature=20.0),
        ]
    )
    own = await host.set_model("m-2", "mad", {"window": 10, "warmup": 5})
    assert own["anomaly"]["model"] == "mad"
    assert own["anomaly"]["source"] == "twin"
    assert store.commits[-1][0] == "m-2"  # durable before the answer

    assert await host.set_family_model("smart-meter", {"model": "stuck", "params": {}}) == 1
    meter = await host.get("m-1")
    assert (meter["anomaly"]["model"], meter["anomaly"]["source"]) == ("stuck", "family")
    assert (await host.get("m-2"))["anomaly"]["model"] == "mad"  # its own stays
    assert (await host.get("s-1"))["anomaly"]["model"] == "ewma"  # another family

    # New twins of the family get it too; back to the built-in default when unassigned.
    await host.apply([telemetry("m-3", device_type="smart-meter", power=2.0)])
    assert (await host.get("m-3"))["anomaly"]["model"] == "stuck"
    assert await host.set_family_model("smart-meter", None) == 2
    assert (await host.get("m-1"))["anomaly"]["source"] == "default"
    back = await host.set_model("m-2", None)
    assert (back["anomaly"]["model"], back["anomaly"]["source"]) == ("ewma", "default")


async def test_a_sleeping_twin_wakes_up_with_the_model_assigned_meanwhile(
    ray_stays_down: None, store: RecordingStore, clock: FakeClock
) -> None:
    first = TwinHost("h", store, settings=QUIET, clock=clock)
    await first.apply([telemetry("m-1", device_type="smart-meter", power=1.0)])
    await first.stop()
    second = TwinHost(
        "h",
        store,
        settings=QUIET,
        clock=clock,
        assignments={"smart-meter": {"model": "mad", "params": {"threshold": 8}}},
    )
    doc = await second.get("m-1")
    assert (doc["anomaly"]["model"], doc["anomaly"]["source"]) == ("mad", "family")
    await second.stop()
    saved = store.stored("m-1")
    assert saved is not None
    assert saved["model"]["info"]["params"] == {"threshold": 8}


async def test_bad_model_assignments_are_refused(host: TwinHost) -> None:
    await host.apply([telemetry("m-1", device_type="smart-meter", power=1.0)])
    with pytest.raises(
        UnknownModel, match=r"known: combined, ewma, (level, )?mad, mahalanobis, sklearn, stuck"
    ):
        await host.set_model("m-1", "nope")
    # Bad input that is not a patch (errors.py): InvalidRequest itself, not InvalidPatch.
    with pytest.raises(InvalidRequest, match="unknown mad parameters: nope") as caught:
        await host.set_model("m-1", "mad", {"nope": 1})
    assert not isinstance(caught.value, InvalidPatch)
    assert (await host.get("m-1"))["anomaly"]["model"] == "ewma"


async def test_model_parameters_of_the_wrong_type_are_refused_as_bad_input(
    host: TwinHost,
) -> None:
    await host.apply([telemetry("m-1", device_type="smart-meter", power=1.0)])
    for model, params in (("ewma", {"alpha": "x"}), ("combined", {"ewma": 5})):
        with pytest.raises(InvalidRequest, match=f"parameters of model '{model}'") as caught:
            await host.set_model("m-1", model, params)
        assert not isinstance(caught.value, InvalidPatch)


class _SlowSink(MemoryTelemetrySink):
    """A history sink that refuses writes until told otherwise (a sink that is behind)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    def write(self, points: Sequence[Any]) -> None:
        if self.down:
            raise ConnectionError("sink behind")
        super().write(points)


def test_history_waiting_for_a_slow_sink_is_bounded_and_drops_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(history_module, "_MAX_PENDING_POINTS", 100)
    monkeypatch.setattr(history_module, "_WRITE_CHUNK", 30)
    sink = _SlowSink()

    async def scenario() -> dict[str, Any]:
        host = TwinHost("h", MemoryStore(), settings=QUIET, telemetry=sink)
        # 80 readings of two metrics, and a score each: 240 points, never written meanwhile.
        for k in range(80):
            await host.apply([DeviceMessage("slow-1", "telemetry", {"a": k, "b": -k}, T0 + k)])
            assert len(host._history.points) <= 100 + 3
        await host.flush()  # the sink refuses: kept, still bounded
        stats = await host.stats()
        sink.down = False
        await host.flush()  # written in chunks of 30 once it takes them
        stats["after"] = await host.stats()
        stats["newest"] = sink.query("slow-1", metric="a", since=T0 + 79)
        return stats

    stats = asyncio.run(scenario())
    assert stats["history_dropped"] == 240 - 100
    assert stats["after"]["history_points"] == 100
    assert [p.value for p in stats["newest"]] == [79.0]  # the oldest went first


def test_history_older_than_the_retention_is_deleted_by_the_hosts() -> None:
    clock = FakeClock(T0)
    sink = MemoryTelemetrySink()
    settings = HostSettings(
        flush_interval_s=3600.0,
        sweep_interval_s=3600.0,
        history_retention_s=3600.0,
        retention_interval_s=0.01,
    )

    async def scenario() -> tuple[list[float], dict[str, Any]]:
        host = TwinHost("h", MemoryStore(), settings=settings, telemetry=sink, clock=clock)
        await host.start()
        old = [
            DeviceMessage("ret-1", "telemetry", {"a": 1.0}, clock() - 7200 + k) for k in range(3)
        ]
        await host.apply([*old, DeviceMessage("ret-1", "telemetry", {"a": 2.0}, clock() - 60)])
        await host.flush()
        for _ in range(200):  # the host's own retention loop, every 10 ms here
            if len(sink.query("ret-1", metric="a")) == 1:
                break
            await asyncio.sleep(0.01)
        kept = [p.ts for p in sink.query("ret-1", metric="a")]
        stats = await host.stats()
        await host.stop()
        return kept, stats

    kept, stats = asyncio.run(scenario())
    assert kept == [T0 - 60]
    assert stats["history_expired"] >= 3
    with pytest.raises(ValueError, match="history_retention_s must be positive"):
        HostSettings(history_retention_s=0)
