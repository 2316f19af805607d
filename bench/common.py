"""Helpers shared by the benchmarks: Ray start-up, message generation, reporting."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import ray

from twinfleet.adapters.simulator import SignalSimulator
from twinfleet.runtime import DeviceMessage

RESULTS = Path(__file__).with_name("results")


def start_ray() -> None:
    """A local Ray on the machine's cores, as a user would run it."""
    ray.init(
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=512 * 1024 * 1024,
        namespace=f"bench-{os.getpid()}",
    )


def fleet_messages(devices: int, rounds: int, *, seed: int = 7) -> list[list[DeviceMessage]]:
    """``rounds`` lists of one reading from each of ``devices`` simulated devices."""
    sim = SignalSimulator(devices, seed=seed, anomaly_rate=0.0005, start=1.8e9)
    return [sim.readings(devices, now=1.8e9 + 10 * r) for r in range(rounds)]


def report(name: str, figures: dict[str, Any]) -> None:
    """Print the figures and keep them as JSON under bench/results/."""
    figures = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        **figures,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
