"""Simulated devices of the five families, with realistic signals and injected anomalies.

Signals: a daily cycle, noise, slow drift and per-device variation around each metric's
typical value; counters only grow. Anomalies (spikes, drifts, stuck values) are injected at a
chosen rate and labelled, so models can be evaluated against them. Values are generated with
numpy a family at a time, so one process feeds tens of thousands of devices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

from twinfleet.runtime.messages import DeviceMessage
from twinfleet.twins import FAMILIES, DeviceFamily

__all__ = ["Anomaly", "SignalProfile", "SignalSimulator"]

SIMULATED_FAMILIES = (
    "smart-sensor",
    "industrial-controller",
    "smart-meter",
    "patient-monitor",
    "vehicle-tracker",
)


@dataclass(frozen=True, slots=True)
class SignalProfile:
    """How one metric behaves: typical value, daily swing, noise, spread between devices."""

    mean: float
    daily: float = 0.0
    noise: float = 0.0
    spread: float = 0.0
    counter_rate: float = 0.0  # units per second, for counters
    digits: int = 2


# Typical behaviour per metric name (families declare names and units; this says how they move).
PROFILES: Mapping[str, SignalProfile] = {
    "temperature": SignalProfile(21.0, daily=3.0, noise=0.15, spread=2.0),
    "humidity": SignalProfile(45.0, daily=8.0, noise=0.5, spread=5.0),
    "pressure": SignalProfile(1013.0, daily=1.5, noise=0.2, spread=4.0),
    "motion": SignalProfile(0.0, counter_rate=0.02, digits=0),
    "battery": SignalProfile(88.0, noise=0.05, spread=8.0, digits=1),
    "motor_rpm": SignalProfile(1480.0, daily=60.0, noise=8.0, spread=200.0, digits=0),
    "motor_current": SignalProfile(42.0, daily=4.0, noise=0.6, spread=6.0),
    "vibration": SignalProfile(2.2, noise=0.12, spread=0.4),
    "cycle_count": SignalProfile(0.0, counter_rate=0.5, digits=0),
    "power": SignalProfile(1.2, daily=0.8, noise=0.1, spread=0.4, digits=3),
    "energy": SignalProfile(0.0, counter_rate=1.2 / 3600, digits=4),
    "voltage": SignalProfile(230.0, daily=2.0, noise=0.6, spread=1.5, digits=1),
    "flow": SignalProfile(0.4, daily=0.3, noise=0.05, spread=0.1, digits=3),
    "volume": SignalProfile(0.0, counter_rate=0.4 / 3600, digits=4),
    "heart_rate": SignalProfile(72.0, daily=6.0, noise=1.5, spread=8.0, digits=0),
    "spo2": SignalProfile(97.5, noise=0.3, spread=0.8, digits=1),
    "resp_rate": SignalProfile(15.0, daily=1.0, noise=0.6, spread=2.0, digits=1),
    "systolic": SignalProfile(120.0, daily=6.0, noise=2.0, spread=10.0, digits=0),
    "diastolic": SignalProfile(78.0, daily=4.0, noise=1.5, spread=6.0, digits=0),
    "body_temperature": SignalProfile(36.8, daily=0.3, noise=0.05, spread=0.2),
    "lat": SignalProfile(48.14, noise=0.0005, spread=0.2, digits=6),
    "lon": SignalProfile(11.58, noise=0.0005, spread=0.2, digits=6),
    "speed": SignalProfile(55.0, daily=25.0, noise=4.0, spread=10.0, digits=1),
    "heading": SignalProfile(180.0, noise=5.0, spread=90.0, digits=0),
    "fuel": SignalProfile(60.0, noise=0.1, spread=20.0, digits=1),
    "engine_temperature": SignalProfile(90.0, daily=3.0, noise=0.8, spread=3.0, digits=1),
}

AnomalyKind = Literal["spike", "drift", "stuck"]


class Anomaly(NamedTuple):
    """A labelled, injected anomaly: which device and metric, what kind, and when."""

    device_id: str
    metric: str
    kind: AnomalyKind
    start: float
    end: float


@dataclass
class _Group:
    """Devices of one family, as arrays: one row per device, one column per metric."""

    family: DeviceFamily
    ids: list[str]
    gauges: list[str]
    counters: list[str]
    profiles: list[SignalProfile]
    base: np.ndarray
    phase: np.ndarray
    counter_values: np.ndarray
    last_ts: np.ndarray  # when each device last reported, so counters grow with real time
    drift: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.drift = np.zeros_like(self.base)


class SignalSimulator:
    """``devices`` simulated devices spread over the five families, deterministic per seed.

    ``on_anomaly`` is called with each anomaly as it is injected (e.g. to write labels out);
    every anomaly is also kept in ``anomalies``.
    """

    def __init__(
        self,
        devices: int,
        *,
        seed: int = 0,
        prefix: str = "sim",
        anomaly_rate: float = 0.0005,
        start: float = 0.0,
        on_anomaly: Callable[[Anomaly], None] | None = None,
    ) -> None:
        if devices < 1:
            raise ValueError("simulate at least one device")
        if not 0.0 <= anomaly_rate <= 1.0:
            raise ValueError("anomaly_rate is a probability per reading")
        self._rng = np.random.default_rng(seed)
        self.anomaly_rate = anomaly_rate
        self.anomalies: list[Anomaly] = []
        self._on_anomaly = on_anomaly
        # stuck values in progress: (group, row) -> {column: (value, until)}
        self._stuck: dict[tuple[int, int], dict[int, tuple[float, float]]] = {}
        self._groups: list[_Group] = []
        self._cursor = 0
        self._start = start
        per_family = [devices // len(SIMULATED_FAMILIES)] * len(SIMULATED_FAMILIES)
        for i in range(devices % len(SIMULATED_FAMILIES)):
            per_family[i] += 1
        for name, count in zip(SIMULATED_FAMILIES, per_family, strict=True):
            if count:
                self._groups.append(self._group(FAMILIES[name], count, prefix))
        # round-robin order over all devices: (group index, row)
        self._order = [
            (g, r) for g, group in enumerate(self._groups) for r in range(len(group.ids))
        ]
        self._rng.shuffle(self._order)
        self._index = {
            device: (g, r)
            for g, group in enumerate(self._groups)
            for r, device in enumerate(group.ids)
        }

    def _group(self, family: DeviceFamily, count: int, prefix: str) -> _Group:
        metrics = [m for m in family.metrics if m.name in PROFILES]
        gauges = [m.name for m in metrics if m.kind == "gauge"]
        counters = [m.name for m in metrics if m.kind == "counter"]
        profiles = [PROFILES[name] for name in gauges]
        means = np.array([p.mean for p in profiles])
        spreads = np.array([p.spread for p in profiles])
        base = means + self._rng.normal(0.0, 1.0, (count, len(gauges))) * spreads
        return _Group(
            family=family,
            ids=[f"{prefix}-{family.name}-{i:06d}" for i in range(count)],
            gauges=gauges,
            counters=counters,
            profiles=profiles,
            base=base,
            phase=self._rng.uniform(0, 2 * math.pi, (count, 1)),
            counter_values=self._rng.uniform(0, 1000, (count, len(counters))),
            last_ts=np.full(count, self._start),
        )

    @property
    def devices(self) -> list[tuple[str, str]]:
        """Every simulated device as (id, family name)."""
        return [(i, g.family.name) for g in self._groups for i in g.ids]

    def __len__(self) -> int:
        return len(self._order)

    def family(self, device_id: str) -> str:
        """The family name of one simulated device (``KeyError`` for an unknown id)."""
        return self._groups[self._index[device_id][0]].family.name

    def readings(self, count: int, *, now: float) -> list[DeviceMessage]:
        """The next ``count`` telemetry messages (devices in round-robin), measured at ``now``."""
        picks: dict[int, list[int]] = {}
        order = self._order
        for k in range(count):
            g, row = order[(self._cursor + k) % len(order)]
            picks.setdefault(g, []).append(row)
        self._cursor = (self._cursor + count) % len(order)
        return self._emit(picks, now)

    def readings_for(self, device_ids: Iterable[str], *, now: float) -> list[DeviceMessage]:
        """One telemetry message from each of ``device_ids``, measured at ``now``.

        Devices are generated a family at a time, so a batch costs a few numpy calls; the
        messages come grouped by family, not in the order asked.
        """
        picks: dict[int, list[int]] = {}
        for device in device_ids:
            g, row = self._index[device]
            picks.setdefault(g, []).append(row)
        return self._emit(picks, now)

    def _emit(self, picks: Mapping[int, list[int]], now: float) -> list[DeviceMessage]:
        out: list[DeviceMessage] = []
        for g, rows in picks.items():
            out.extend(self._generate(g, np.asarray(rows), now))
        return out

    def _generate(self, g: int, rows: np.ndarray, now: float) -> Iterator[DeviceMessage]:
        group = self._groups[g]
        n, m = len(rows), len(group.gauges)
        daily = np.array([p.daily for p in group.profiles])
        noise = np.array([p.noise for p in group.profiles])
        cycle = np.sin(2 * math.pi * (now % 86_400) / 86_400 + group.phase[rows])
        values = group.base[rows] + group.drift[rows] + cycle * daily
        values += self._rng.normal(0.0, 1.0, (n, m)) * noise
        if self.anomaly_rate and m:
            values = self._inject(g, rows, values, now)
        elapsed = np.maximum(now - group.last_ts[rows], 0.0)[:, None]
        group.last_ts[rows] = np.maximum(group.last_ts[rows], now)
        if group.counters:
            rates = np.array([PROFILES[c].counter_rate for c in group.counters])
            jitter = self._rng.uniform(0.5, 1.5, (n, len(group.counters)))
            group.counter_values[rows] += rates * jitter * elapsed
        digits = [p.digits for p in group.profiles]
        family = group.family.name
        for i, row in enumerate(rows.tolist()):
            payload: dict[str, float] = {
                name: round(float(v), d)
                for name, v, d in zip(group.gauges, values[i].tolist(), digits, strict=True)
            }
            for j, name in enumerate(group.counters):
                payload[name] = round(float(group.counter_values[row, j]), PROFILES[name].digits)
            yield DeviceMessage(group.ids[row], "telemetry", payload, now, "sim", family)

    def _inject(self, g: int, rows: np.ndarray, values: np.ndarray, now: float) -> np.ndarray:
        group = self._groups[g]
        n, m = values.shape
        # continue stuck values already in progress (looked up per row: batches can be small
        # and many, so never scan every stuck value of the fleet)
        if self._stuck:
            for i, row in enumerate(rows.tolist()):
                stuck = self._stuck.get((g, row))
                if not stuck:
                    continue
                for col, (value, until) in list(stuck.items()):
                    if now > until:
                        del stuck[col]
                    else:
                        values[i, col] = value
                if not stuck:
                    del self._stuck[(g, row)]
        hit = np.less(self._rng.random(n), self.anomaly_rate)
        for i in np.flatnonzero(hit).tolist():
            col = int(self._rng.integers(m))
            row = int(rows[i])
            profile = group.profiles[col]
            scale = max(profile.noise, 1e-3)
            kind: AnomalyKind = ("spike", "drift", "stuck")[int(self._rng.integers(3))]
            metric = group.gauges[col]
            device = group.ids[row]
            if kind == "spike":
                values[i, col] += scale * float(self._rng.choice([-1.0, 1.0])) * 25.0
                anomaly = Anomaly(device, metric, "spike", now, now)
            elif kind == "drift":
                group.drift[row, col] += scale * 15.0
                anomaly = Anomaly(device, metric, "drift", now, math.inf)
            else:
                until = now + 300.0
                self._stuck.setdefault((g, row), {})[col] = (float(values[i, col]), until)
                anomaly = Anomaly(device, metric, "stuck", now, until)
            self.anomalies.append(anomaly)
            if self._on_anomaly is not None:
                self._on_anomaly(anomaly)
        return values
