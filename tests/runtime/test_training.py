"""Training models on history as Ray tasks while twins keep ingesting, then swapping them in."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import eventually

from twinfleet import Runtime
from twinfleet.errors import InvalidRequest, UnknownModel
from twinfleet.runtime import DeviceMessage, RuntimeSettings
from twinfleet.runtime.training import TrainingNotFound

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

FAMILY = "industrial-controller"
T0 = 1_790_000_000.0


def reading(rng: random.Random) -> dict[str, float]:
    """A motor whose current and temperature follow its speed."""
    rpm = rng.gauss(3000.0, 300.0)
    return {
        "motor_rpm": rpm,
        "motor_current": rpm / 30.0 + rng.gauss(0.0, 1.0),
        "temperature": 40.0 + rpm / 100.0 + rng.gauss(0.0, 0.5),
    }


def history(twin_ids: list[str], n: int, *, seed: int = 7, t0: float = T0) -> list[DeviceMessage]:
    rng = random.Random(seed)
    return [
        DeviceMessage(twin_id, "telemetry", reading(rng), t0 + i, "test", FAMILY)
        for i in range(n)
        for twin_id in twin_ids
    ]


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = RuntimeSettings(hosts=2, telemetry=f"sqlite:///{tmp_path / 'telemetry.db'}")
    with Runtime(store=f"sqlite:///{tmp_path / 'state.db'}", settings=settings) as rt:
        yield rt


class Feeder:
    """Ingests fresh readings for some twins from a thread until stopped; counts them."""

    def __init__(self, runtime: Runtime, twin_ids: list[str]) -> None:
        self.runtime, self.twin_ids, self.sent = runtime, twin_ids, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng, ts = random.Random(11), T0 + 10_000
        while not self._stop.is_set():
            batch = [
                DeviceMessage(t, "telemetry", reading(rng), ts, "test", FAMILY)
                for t in self.twin_ids
            ]
            result = self.runtime.ingest(batch)
            assert not result.rejected
            self.sent += len(batch)
            ts += 1
            time.sleep(0.01)

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_a_family_model_trains_while_twins_ingest_and_is_swapped_in(
    runtime: Runtime, tmp_path: Path
) -> None:
    trained_on = [f"motor-{i}" for i in range(12)]
    busy = [f"busy-{i}" for i in range(4)]  # twins that keep streaming during the training
    runtime.ingest(history(trained_on, 120))
    runtime.flush()
    with Feeder(runtime, busy) as feeder:
        job = runtime.train(family=FAMILY, model="sklearn", params={"estimator": "lof"})
        assert job["status"] == "running"
        assert runtime.training(job["id"])["id"] == job["id"]
        finished = eventually(
            lambda: (r := runtime.training(job["id"]))["status"] != "running" and r, timeout=120
        )
        done = asyncio.run(finished)
        sent_during = feeder.sent
    assert done["status"] == "succeeded", done["error"]
    # The streaming twins are of the family too: trained on whatever history they had by
    # then (none yet, if the job read first).
    assert len(trained_on) <= done["twins_trained"] <= len(trained_on) + len(busy)
    assert done["readings"] >= 12 * 120
    assert done["version"] == f"1+{job['id']}"
    assert sent_during > 0
    runtime.flush()
    # Nothing the feeder sent was lost: every busy twin saw every one of its readings.
    per_twin = feeder.sent // len(busy)
    for twin_id in busy:
        doc = runtime.twin(twin_id).get()
        assert doc["version"] >= per_twin
        assert doc["anomaly"]["version"] == f"1+{job['id']}"  # swapped in mid-stream

    doc = runtime.twin("motor-3").get()
    assert doc["anomaly"]["model"] == "sklearn"
    assert doc["anomaly"]["version"] == f"1+{job['id']}"
    assert doc["anomaly"]["source"] == "family"
    # The trained model judges: a motor drawing far too much current for its speed.
    late = T0 + 100_000
    runtime.ingest([DeviceMessage("motor-3", "telemetry", reading(random.Random(3)), late)])
    runtime.flush()
    assert not runtime.twin("motor-3").get()["anomaly"]["anomalous"]
    odd = {"motor_rpm": 3000.0, "motor_current": 160.0, "temperature": 70.0}
    runtime.ingest([DeviceMessage("motor-3", "telemetry", odd, late + 1)])
    runtime.flush()
    assert runtime.twin("motor-3").get()["anomaly"]["anomalous"]
    # A twin of the family that did not exist then gets the trained model too.
    runtime.ingest([DeviceMessage("motor-new", "telemetry", odd, late, "test", FAMILY)])
    runtime.flush()
    fresh = runtime.twin("motor-new").get()["anomaly"]
    assert (fresh["version"], fresh["anomalous"]) == (f"1+{job['id']}", True)
    assignment = {a["family"]: a for a in runtime.model_assignments()}[FAMILY]
    assert assignment["trained"]["id"] == job["id"]
    assert [j["id"] for j in runtime.trainings()] == [job["id"]]


def test_each_twin_trains_on_its_own_history(runtime: Runtime) -> None:
    runtime.ingest(history(["own-a", "own-b"], 80) + history(["own-short"], 10, t0=T0 + 500))
    runtime.flush()
    done = runtime.train(
        twins=["own-a", "own-b", "own-short"],
        model="sklearn",
        params={"estimator": "isolation_forest", "min_history": 50},
        scope="twin",
        wait=True,
    )
    assert done["status"] == "succeeded", done["error"]
    assert done["twins_trained"] == 2
    assert "50 needed" in done["skipped"]["own-short"]
    for twin_id in ("own-a", "own-b"):
        anomaly = runtime.twin(twin_id).get()["anomaly"]
        assert (anomaly["model"], anomaly["source"]) == ("sklearn", "twin")
        assert anomaly["version"] == f"1+{done['id']}"
    assert runtime.twin("own-short").get()["anomaly"]["source"] != "twin"


def test_trained_models_and_alarm_rules_survive_a_restart(tmp_path: Path) -> None:
    settings = RuntimeSettings(hosts=2, telemetry=f"sqlite:///{tmp_path / 'telemetry.db'}")
    store = f"sqlite:///{tmp_path / 'state.db'}"
    with Runtime(store=store, settings=settings) as runtime:
        runtime.ingest(history(["keep-a", "keep-b"], 60))
        runtime.flush()
        family = runtime.train(family=FAMILY, model="mahalanobis", wait=True)
        own = runtime.train(twins=["keep-b"], model="ewma", scope="twin", wait=True)
        assert (family["status"], own["status"]) == ("succeeded", "succeeded")
        before = runtime.twin("keep-a").get()["anomaly"]
        hot = {
            "name": "hot",
            "kind": "threshold",
            "metric": "temperature",
            "op": ">",
            "value": 100.0,
            "raise_after": 1,
        }
        runtime.set_alarm_rules(FAMILY, [hot])
    with Runtime(store=store, settings=settings) as runtime:
        after = runtime.twin("keep-a").get()["anomaly"]
        assert after == before
        assert after["version"] == f"1+{family['id']}"
        assert runtime.twin("keep-b").get()["anomaly"]["version"] == f"1+{own['id']}"
        # mahalanobis goes on learning each twin's readings: a family training fits each twin
        # on its own history, and a twin new since then starts untrained (and says so).
        runtime.ingest(history(["keep-c"], 1, t0=T0 + 9_000))
        runtime.flush()
        fresh = runtime.twin("keep-c").get()["anomaly"]
        assert (fresh["model"], fresh["version"], fresh["source"]) == ("mahalanobis", "1", "family")
        # The family's own alarm rules hold on the restarted hosts.
        assert {r["family"]: r for r in runtime.alarm_rules()}[FAMILY]["source"] == "custom"
        hot_reading = {"motor_rpm": 3000.0, "motor_current": 100.0, "temperature": 120.0}
        runtime.ingest([DeviceMessage("keep-a", "telemetry", hot_reading, T0 + 9_001)])
        runtime.flush()
        assert [a["rule"] for a in runtime.twin("keep-a").get()["alarms"]] == ["hot"]


def test_bad_trainings_are_refused_or_fail_with_a_reason(runtime: Runtime) -> None:
    with pytest.raises(UnknownModel):
        runtime.train(family=FAMILY, model="no-such-model")
    with pytest.raises(InvalidRequest, match="cannot be trained"):
        runtime.train(family=FAMILY, model="level")  # the example plugin learns nothing
    with pytest.raises(InvalidRequest, match="parameters of model 'sklearn'"):
        runtime.train(family=FAMILY, model="sklearn", params={"estimator": "nope"})
    with pytest.raises(InvalidRequest, match="no device family"):
        runtime.train(family="toasters", model="ewma")
    with pytest.raises(InvalidRequest, match="no device family 'toasters'"):
        runtime.train(family="toasters")  # its default model is looked up after the check
    with pytest.raises(InvalidRequest, match="name a model"):
        runtime.train(twins=["x"], scope="twin")
    with pytest.raises(InvalidRequest, match="names a family and no twins"):
        runtime.train(twins=["x"], model="ewma")
    with pytest.raises(TrainingNotFound):
        runtime.training("nope")
    failed = runtime.train(family="smart-meter", model="ewma", wait=True)
    assert failed["status"] == "failed"
    assert "no telemetry history of smart-meter" in failed["error"]


def test_without_a_history_sink_training_fails_clearly(tmp_path: Path) -> None:
    with Runtime(store=f"sqlite:///{tmp_path / 's.db'}", settings=RuntimeSettings(hosts=1)) as rt:
        rt.ingest(history(["nohist"], 5))
        failed = rt.train(family=FAMILY, model="ewma", wait=True)
    assert failed["status"] == "failed"
    assert "keeps no telemetry history" in failed["error"]
