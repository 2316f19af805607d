"""``twinfleet up``: the whole platform in the foreground, with a live fleet summary."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from twinfleet.api.auth import TokenStore
from twinfleet.runtime import HostSettings, Runtime, RuntimeSettings
from twinfleet.runtime.stores import open_store
from twinfleet.runtime.telemetry import open_telemetry

from .edges import Edges
from .options import UpOptions

__all__ = ["run_up"]


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
        settings=RuntimeSettings(
            hosts=options.hosts,
            telemetry=options.tsdb_url,
            host=HostSettings(
                history_retention_s=None
                if options.retention_days is None
                else options.retention_days * 86_400.0
            ),
        ),
    )
    # ray.init replaces the SIGTERM handler with one that calls sys.exit(15): take SIGTERM
    # back so it stops the platform through the same clean path as Ctrl-C, exit status 0.
    signal.signal(signal.SIGTERM, stop)
    summary: dict[str, Any] = {}
    tokens = TokenStore(open_store(options.store_url))
    token_file = _admin_token(options.data_dir, tokens)
    edges = Edges(runtime, options.edges, tokens, open_telemetry(options.tsdb_url))
    try:
        edges.start()
        edges.ready.wait()
        if edges.error is not None:
            raise edges.error
        console.print(f"twinfleet: MQTT gateway on {edges.mqtt_url}, CoAP on {edges.coap_url}")
        console.print(f"twinfleet: API on {edges.api_url} (admin token in {token_file})")
        deadline = None if options.duration_s is None else time.monotonic() + options.duration_s
        summary = _watch(runtime, edges, console, stop.event, deadline)
    finally:
        stop.event.set()
        console.print("twinfleet: shutting down, flushing state ...")
        edges.stop()
        runtime.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        console.print("twinfleet: stopped")
    return summary


def _admin_token(data_dir: Path, tokens: TokenStore) -> Path:
    """On first start, an admin token in ``<data-dir>/admin.token`` (mode 0600)."""
    path = data_dir / "admin.token"
    if not path.exists():
        _, token = tokens.create("admin", name="admin (twinfleet up)")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
    return path


def _watch(
    runtime: Runtime,
    edges: Edges,
    console: Console,
    stop: threading.Event,
    deadline: float | None,
) -> dict[str, Any]:
    last_applied, last_time = 0, time.monotonic()
    last_logged = last_time
    summary: dict[str, Any] = {}
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        while not stop.wait(1.0):
            stats = runtime.stats()
            hosts = [*stats["hosts"], *stats["dedicated_hosts"]]
            applied = sum(h["applied"] for h in hosts)
            edge = edges.stats()
            now = time.monotonic()
            rate = (applied - last_applied) / max(now - last_time, 1e-9)
            last_applied, last_time = applied, now
            summary = {
                "twins": stats["active"],
                "online": stats["online"],
                "anomalous": stats["anomalous"],
                "updates_per_s": round(rate, 1),
                "applied": applied,
                "mqtt_in": edge["mqtt_in"],
                "coap_in": edge["coap_in"],
                "rejected": sum(h["rejected"] for h in hosts) + edge["edge_rejected"],
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
    if edges.error is not None:
        raise edges.error
    return summary


_COLUMNS = {
    "twins": "twins",
    "online": "online",
    "anomalous": "anomalous",
    "updates_per_s": "updates/s",
    "applied": "applied",
    "mqtt_in": "MQTT in",
    "coap_in": "CoAP in",
    "rejected": "rejected",
}


def _table(summary: dict[str, Any]) -> Table:
    table = Table(title="twinfleet fleet", show_header=True)
    for column in _COLUMNS.values():
        table.add_column(column, justify="right")
    table.add_row(
        *(
            f"{summary[k]:,}" if isinstance(summary[k], int) else f"{summary[k]:,.1f}"
            for k in _COLUMNS
        )
    )
    return table
