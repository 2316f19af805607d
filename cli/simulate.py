"""``twinfleet simulate``: simulated devices against a real broker or CoAP endpoint."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from twinfleet.adapters.devices import (
    SimulatedDevices,
    SimulatedDevicesOptions,
    SimulatedDevicesStats,
)

__all__ = ["run_simulate"]

COLUMNS = (
    ("online", "online"),
    ("sent", "sent"),
    ("sent_per_s", "sent/s"),
    ("failed", "failed"),
    ("commands_answered", "commands"),
    ("desired_applied", "desired"),
    ("anomalies", "anomalies"),
    ("reconnects", "retries"),
)


def run_simulate(
    options: SimulatedDevicesOptions,
    *,
    duration_s: float | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the fleet until Ctrl-C, SIGTERM or ``duration_s``; returns the final summary."""
    return asyncio.run(_simulate(options, duration_s, console or Console()))


async def _simulate(
    options: SimulatedDevicesOptions, duration_s: float | None, console: Console
) -> dict[str, Any]:
    fleet = SimulatedDevices(options)
    where = options.coap if options.protocol == "coap" else options.mqtt
    connections = f", {options.connection_count} connections" if options.protocol == "mqtt" else ""
    console.print(f"twinfleet: {options.devices} simulated devices -> {where}{connections}")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, fleet.stop)
    started = time.monotonic()
    summary = _summary(fleet.stats, 0, 0.0, 1.0)
    try:
        task = asyncio.create_task(fleet.run(duration_s=duration_s))
        last_sent, last_time, last_logged = 0, started, started
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while not task.done():
                await asyncio.wait({task}, timeout=1.0)
                now = time.monotonic()
                if task.done():
                    break
                summary = _summary(fleet.stats, last_sent, now - last_time, now - started)
                last_sent, last_time = fleet.stats.sent, now
                live.update(_table(summary))
                if not console.is_terminal and now - last_logged >= 10.0:
                    # Off a terminal (a service's log) Live draws nothing until the end.
                    last_logged = now
                    console.print(_line(summary))
            # the last frame: rates over the whole run
            elapsed = time.monotonic() - started
            summary = _summary(fleet.stats, 0, elapsed, elapsed)
            live.update(_table(summary))
        if not console.is_terminal:
            console.line()
        await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    console.print("twinfleet: stopped; " + _line(summary))
    return summary


def _summary(
    stats: SimulatedDevicesStats, last_sent: int, window_s: float, elapsed_s: float
) -> dict[str, Any]:
    summary: dict[str, Any] = stats.as_dict()
    summary["sent_per_s"] = round((stats.sent - last_sent) / window_s, 1) if window_s else 0.0
    summary["elapsed_s"] = round(elapsed_s, 1)
    return summary


def _line(summary: dict[str, Any]) -> str:
    return ", ".join(f"{label} {summary[key]}" for key, label in COLUMNS)


def _table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"twinfleet simulate ({summary['devices']:,} devices)", show_header=True)
    for _, label in COLUMNS:
        table.add_column(label, justify="right")
    table.add_row(
        *(
            f"{summary[key]:,}" if isinstance(summary[key], int) else f"{summary[key]:,.1f}"
            for key, _ in COLUMNS
        )
    )
    return table
