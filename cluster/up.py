"""``twinfleet up``: the whole platform in the foreground, with a live fleet summary."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from twinfleet.adapters.simulator import FleetSimulator
from twinfleet.runtime import Runtime, RuntimeSettings

__all__ = ["UpOptions", "run_up"]


@dataclass(frozen=True, slots=True)
class UpOptions:
    """What ``twinfleet up`` was asked to run."""

    data_dir: Path
    store: str | None = None
    ray_address: str | None = None
    hosts: int = 2
    simulate: int = 0
    interval_s: float = 1.0
    duration_s: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.simulate < 0:
            raise ValueError("--simulate takes a number of devices, 0 or more")
        if self.interval_s <= 0:
            raise ValueError("--interval must be positive")
        if self.hosts < 1:
            raise ValueError("--hosts must be at least 1")

    @property
    def store_url(self) -> str:
        """The store URL, defaulting to SQLite in the data directory."""
        return self.store or f"sqlite:///{self.data_dir.resolve() / 'state.db'}"


class _Stop:
    """Set by Ctrl-C or SIGTERM; the main loop then shuts down cleanly."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()


def run_up(options: UpOptions, *, console: Console | None = None) -> dict[str, Any]:
    """Run the platform until stopped (or ``duration_s``); returns the last fleet summary."""
    console = console or Console()
    options.data_dir.mkdir(parents=True, exist_ok=True)
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    console.print(f"twinfleet: store {options.store_url}, {options.hosts} hosts")
    runtime = Runtime(
        store=options.store_url,
        ray_address=options.ray_address,
        settings=RuntimeSettings(hosts=options.hosts),
    )
    # ray.init replaces the SIGTERM handler with one that calls sys.exit(15): take SIGTERM
    # back so it stops the platform through the same clean path as Ctrl-C, exit status 0.
    signal.signal(signal.SIGTERM, stop)
    summary: dict[str, Any] = {}
    try:
        simulator = (
            FleetSimulator(options.simulate, seed=options.seed, start=time.time())
            if options.simulate
            else None
        )
        feeder = _Feeder(runtime, simulator, options.interval_s, stop.event) if simulator else None
        if feeder:
            feeder.start()
        deadline = None if options.duration_s is None else time.monotonic() + options.duration_s
        summary = _watch(runtime, console, stop.event, deadline, lambda: feeder)
    finally:
        stop.event.set()
        console.print("twinfleet: shutting down, flushing state ...")
        runtime.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        console.print("twinfleet: stopped")
    return summary


class _Feeder(threading.Thread):
    """Feeds the simulated fleet through ``Runtime.ingest``: each device once per interval."""

    def __init__(
        self,
        runtime: Runtime,
        simulator: FleetSimulator,
        interval_s: float,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="twinfleet-simulator", daemon=True)
        self._runtime = runtime
        self._simulator = simulator
        self._interval = interval_s
        self._stop_event = stop
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        tick = 0.1
        per_tick = len(self._simulator) * tick / self._interval
        owed = 0.0
        try:
            while not self._stop_event.wait(tick):
                owed += per_tick
                count = int(owed)
                if count:
                    owed -= count
                    self._runtime.ingest(self._simulator.readings(count, now=time.time()))
                    self.sent += count
        except BaseException as err:  # surfaced in the summary; the platform keeps running
            self.error = err
            self._stop_event.set()


def _watch(
    runtime: Runtime,
    console: Console,
    stop: threading.Event,
    deadline: float | None,
    feeder: Callable[[], _Feeder | None],
) -> dict[str, Any]:
    last_applied, last_time = 0, time.monotonic()
    last_logged = last_time
    summary: dict[str, Any] = {}
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        while not stop.wait(1.0):
            stats = runtime.stats()
            now = time.monotonic()
            rate = (stats["applied"] - last_applied) / max(now - last_time, 1e-9)
            last_applied, last_time = stats["applied"], now
            summary = {
                "twins": stats["active"],
                "online": stats["online"],
                "anomalous": stats["anomalous"],
                "updates_per_s": round(rate, 1),
                "applied": stats["applied"],
                "rejected": stats["rejected"],
            }
            live.update(_table(summary))
            if not console.is_terminal and now - last_logged >= 10.0:
                # Off a terminal (a service's log) Live draws nothing until the end.
                last_logged = now
                console.print("twinfleet: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
            if deadline is not None and now >= deadline:
                break
    if not console.is_terminal:
        console.line()  # off a terminal, Live leaves its last frame without a newline
    running = feeder()
    if running is not None and running.error is not None:
        raise running.error
    return summary


def _table(summary: dict[str, Any]) -> Table:
    table = Table(title="twinfleet fleet", show_header=True)
    for column in ("twins", "online", "anomalous", "updates/s", "applied", "rejected"):
        table.add_column(column, justify="right")
    table.add_row(
        *(
            f"{summary[k]:,}" if isinstance(summary[k], int) else f"{summary[k]:,.1f}"
            for k in ("twins", "online", "anomalous", "updates_per_s", "applied", "rejected")
        )
    )
    return table
