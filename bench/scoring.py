"""Streaming scoring throughput of the built-in anomaly models, per core.

Two views, one process, no Ray:

- each model alone: ``update`` over simulated readings of 2,000 devices (five families),
  in points (metric values) scored per second; baseline in the same run: the same loop with a
  model that only sums the values (the harness's own cost);
- inside a host batch: ``TwinHost.apply`` of the same messages with every twin scored by EWMA,
  against the same host with no model at all, in messages/s;
- ``sklearn`` (isolation_forest fitted per family on the first tenth, shared by the family's
  devices): scored a reading at a time against scored in batches of 1,024 (``prescore``, as a
  host does).

    .venv/bin/python bench/scoring.py [--devices 2000] [--rounds 50]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from common import report

from twinfleet.adapters.simulator import SignalSimulator
from twinfleet.models import ModelRegistry, ModelSpec, Verdict, default_registry, prescore
from twinfleet.runtime import DeviceMessage
from twinfleet.runtime.host import TwinHost
from twinfleet.runtime.stores import MemoryStore


class SumOnly:
    """The floor: touches every value, decides nothing."""

    name = "sum"

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        return Verdict(sum(values.values()), False, None)

    def state(self) -> dict[str, Any]:
        return {}


def readings(devices: int, rounds: int) -> list[DeviceMessage]:
    sim = SignalSimulator(devices, seed=5, anomaly_rate=0.0005, start=1.8e9)
    out: list[DeviceMessage] = []
    for r in range(rounds):
        out.extend(sim.readings(devices, now=1.8e9 + 10 * r))
    return out


def numeric(msg: DeviceMessage) -> dict[str, float]:
    return {k: float(v) for k, v in msg.payload.items() if type(v) in (int, float) and k != "ts"}


def model_rate(spec: ModelSpec, messages: list[tuple[str, float, dict[str, float]]]) -> float:
    """Points scored per second by fresh models of ``spec``, one per device."""
    models: dict[str, Any] = {}
    points = 0
    start = time.perf_counter()
    for device, ts, values in messages:
        model = models.get(device)
        if model is None:
            model = models[device] = spec.create({})
        model.update(values, ts)
        points += len(values)
    return points / (time.perf_counter() - start)


def sklearn_rates(messages: list[DeviceMessage], *, one_by_one: int = 2_000) -> dict[str, float]:
    """Points/s of a family-trained isolation forest: alone per reading, and batch-scored."""
    registry = default_registry(plugins=False)
    cut = len(messages) // 10
    by_family: dict[str, list[tuple[float, dict[str, float]]]] = {}
    for m in messages[:cut]:
        by_family.setdefault(str(m.device_type), []).append((float(m.ts or 0.0), numeric(m)))
    states = {}
    for family, history in by_family.items():
        model = registry.create("sklearn")
        model.fit(history)
        states[family] = model.state()
    models = {
        m.device_id: registry.restore("sklearn", states[str(m.device_type)]) for m in messages
    }
    rest = [(models[m.device_id], float(m.ts or 0.0), numeric(m)) for m in messages[cut:]]
    start = time.perf_counter()
    for model, ts, values in rest[:one_by_one]:
        model.update(values, ts)
    alone = sum(len(v) for _, _, v in rest[:one_by_one]) / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, len(rest), 1024):
        chunk = rest[i : i + 1024]
        prescore([(model, values) for model, _, values in chunk])
        for model, ts, values in chunk:
            model.update(values, ts)
    batched = sum(len(v) for _, _, v in rest) / (time.perf_counter() - start)
    return {"one_by_one": alone, "batched_1024": batched}


def host_rate(messages: list[DeviceMessage], registry: ModelRegistry) -> float:
    """Messages/s through ``TwinHost.apply`` in batches of 1,000."""

    async def run() -> float:
        host = TwinHost("bench", MemoryStore(), models=registry)
        first = messages[: len(messages) // 10]  # create the twins before timing
        await host.apply(first)
        rest = messages[len(first) :]
        start = time.perf_counter()
        for i in range(0, len(rest), 1000):
            await host.apply(rest[i : i + 1000])
        elapsed = time.perf_counter() - start
        await host.stop()
        return len(rest) / elapsed

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # a host without models warns once per twin
    messages = readings(args.devices, args.rounds)
    plain = [(m.device_id, float(m.ts or 0.0), numeric(m)) for m in messages]
    floor = model_rate(ModelSpec("sum", lambda p: SumOnly(), lambda s: SumOnly()), plain)
    specs = [s for s in default_registry(plugins=False).specs() if s.name != "sklearn"]
    rates = {spec.name: model_rate(spec, plain) for spec in specs}  # sklearn: trained, below
    forest = sklearn_rates(messages)
    with_ewma = host_rate(messages, default_registry(plugins=False))
    without = host_rate(messages, ModelRegistry())
    report(
        "scoring",
        {
            "command": "python bench/scoring.py "
            + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
            "points_per_message": round(sum(len(v) for _, _, v in plain) / len(plain), 2),
            "baseline_sum_only_points_per_s": round(floor),
            "models_points_per_s": {k: round(v) for k, v in rates.items()},
            "ratio_to_baseline": {k: round(v / floor, 3) for k, v in rates.items()},
            "host_apply_msgs_per_s_with_ewma": round(with_ewma),
            "host_apply_msgs_per_s_without_model": round(without),
            "host_ratio_with_over_without": round(with_ewma / without, 3),
            "sklearn_isolation_forest_points_per_s": {k: round(v) for k, v in forest.items()},
            "sklearn_batch_over_one_by_one": round(
                forest["batched_1024"] / forest["one_by_one"], 1
            ),
            "target_ewma_points_per_s": 200_000,
        },
    )


if __name__ == "__main__":
    main()
