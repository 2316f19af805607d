"""``twinfleet up``: the whole platform in the foreground, with a live fleet summary.

The first screen says where things are (dashboard, API docs, token file, broker, CoAP) and then
shows one table, redrawn in place: twins, online, anomalous, messages/s and lag p99 per
protocol, edge processes and their restarts. Expected conditions (a taken port) are one line
each; Ray's own start-up output and every log record go to ``<data-dir>/twinfleet.log``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from twinfleet.api.auth import TokenStore
from twinfleet.runtime import HostSettings, Runtime, RuntimeSettings
from twinfleet.runtime.flow import FlowMeter, lag_buckets, quantile
from twinfleet.runtime.stores import open_store
from twinfleet.runtime.telemetry import open_telemetry

from .edges import Edges
from .options import UpOptions

__all__ = ["run_up"]

LOG_FILE = "twinfleet.log"


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
    log_path = options.data_dir / LOG_FILE
    _log_to(log_path)
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    _say(console, f"twinfleet: starting {options.hosts} hosts on Ray, store {options.store_url}")
    with _quiet(log_path):
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
            ray_options={"configure_logging": False},
        )
    # ray.init replaces the SIGTERM handler with one that calls sys.exit(15): take SIGTERM
    # back so it stops the platform through the same clean path as Ctrl-C, exit status 0.
    signal.signal(signal.SIGTERM, stop)
    summary: dict[str, Any] = {}
    tokens = TokenStore(open_store(options.store_url))
    token_file = _admin_token(options.data_dir, tokens)
    edges = Edges(runtime, options.edges, tokens, open_telemetry(options.tsdb_url))
    try:
        with _quiet(log_path):
            edges.start()
        for notice in edges.notices:
            _say(console, f"twinfleet: {notice}")
        where = {
            "dashboard": f"{edges.api_url}/",
            "API docs": f"{edges.api_url}/docs",
            "admin token": str(token_file),
            "MQTT": f"{edges.mqtt_url} ({edges.broker_kind}, {edges.gateways} gateway"
            f"{'s' if edges.gateways != 1 else ''})",
            "CoAP": edges.coap_url,
            "log": str(log_path),
        }
        if not console.is_terminal:  # a service's log: where things are, once, in plain lines
            for name, value in where.items():
                _say(console, f"twinfleet: {name} {value}")
        deadline = None if options.duration_s is None else time.monotonic() + options.duration_s
        summary = _watch(runtime, edges, console, stop.event, deadline, where)
    finally:
        stop.event.set()
        _say(console, "twinfleet: shutting down, flushing state ...")
        with _quiet(log_path):
            if summary:
                summary["final"] = _final(runtime, edges)
            edges.stop()
            runtime.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _say(console, "twinfleet: stopped")
    return summary


def _say(console: Console, text: str) -> None:
    """One line of the first screen, never wrapped (off a terminal, rich would at 80)."""
    console.print(text, soft_wrap=True, highlight=False)


def _log_to(path: Path) -> None:
    """Every log record (ours, Ray's, the libraries') into ``path``, none on the terminal."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@contextlib.contextmanager
def _quiet(path: Path) -> Iterator[None]:
    """Send what the process and its children write to stdout and stderr into ``path``
    meanwhile (Ray's start-up lines come from C++ and child processes, not from logging)."""
    streams = (sys.stdout, sys.stderr)
    if os.environ.get("TWINFLEET_DEBUG_SCREEN"):
        yield
        return
    try:
        fds = [s.fileno() for s in streams]
    except (AttributeError, OSError, ValueError):  # not real files (captured in a test)
        yield
        return
    for stream in streams:
        stream.flush()
    saved = [os.dup(fd) for fd in fds]
    with open(path, "ab") as log:
        try:
            for fd in fds:
                os.dup2(log.fileno(), fd)
            yield
        finally:
            for stream in streams:
                with contextlib.suppress(Exception):
                    stream.flush()
            for fd, copy in zip(fds, saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


def _admin_token(data_dir: Path, tokens: TokenStore) -> Path:
    """On first start, an admin token in ``<data-dir>/admin.token`` (mode 0600)."""
    path = data_dir / "admin.token"
    if not path.exists():
        _, token = tokens.create("admin", name="admin (twinfleet up)")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
    return path


class _Cpu:
    """CPU seconds of the driver and each edge process (by pid), for the summary."""

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}

    def seconds(self, pid: int) -> float | None:
        process = self._processes.get(pid)
        try:
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
            times = process.cpu_times()
        except psutil.Error:
            return None
        return round(float(times.user + times.system), 2)


def _watch(  # noqa: PLR0917 - the one caller passes each in order
    runtime: Runtime,
    edges: Edges,
    console: Console,
    stop: threading.Event,
    deadline: float | None,
    where: dict[str, str],
) -> dict[str, Any]:
    started = time.monotonic()
    meter = FlowMeter()
    cpu = _Cpu()
    last_applied, last_time = 0, started
    last_logged = started
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
            flow = meter.update(hosts, now)
            summary = {
                "twins": stats["active"],
                "online": stats["online"],
                "anomalous": stats["anomalous"],
                "updates_per_s": round(rate, 1),
                "applied": applied,
                "mqtt_in": edge["mqtt_in"],
                "coap_in": edge["coap_in"],
                "devices_sent": edge["devices_sent"],
                "rejected": sum(h["rejected"] for h in hosts) + edge["edge_rejected"],
                "offline_transitions": sum(h.get("offline", 0) for h in hosts),
                "edge_restarts": edge["restarts"],
                "flow": {p: {k: round(v, 3) for k, v in f.items()} for p, f in flow.items()},
                "lag_p99_s_since_start": _lag_since_start(hosts),
                "cpu_s": _cpu_seconds(cpu, edge["processes"], hosts),
                "uptime_s": round(now - started, 1),
            }
            live.update(_screen(summary, edge["processes"], where))
            if not console.is_terminal and now - last_logged >= 10.0:
                # Off a terminal (a service's log) Live draws nothing until the end.
                last_logged = now
                _say(console, "twinfleet: " + _line(summary))
            if deadline is not None and now >= deadline:
                break
    if not console.is_terminal:
        console.line()  # off a terminal, Live leaves its last frame without a newline
    return summary


def _final(runtime: Runtime, edges: Edges) -> dict[str, Any]:
    """After the simulated devices stopped and the edges drained: what the devices had
    acknowledged against what the hosts took, per protocol (an MQTT device's messages are its
    readings, reported patches and ``online`` announcements). CoAP readings are
    non-confirmable: those whose answer had not come back when the devices stopped count as
    unanswered, though the hosts may have taken them."""
    devices = edges.stop_devices()
    drained = edges.drain()
    stats = runtime.stats()
    hosts = [*stats["hosts"], *stats["dedicated_hosts"]]
    taken: dict[str, int] = {}
    for host in hosts:
        for protocol, n in host.get("messages_by_protocol", {}).items():
            taken[protocol] = taken.get(protocol, 0) + int(n)
    sent = {
        str(d.get("protocol")): int(d.get("sent", 0))
        + int(d.get("reported", 0))
        + int(d.get("announced", 0))
        for d in devices.values()
    }
    unanswered = {str(d.get("protocol")): int(d.get("failed", 0)) for d in devices.values()}
    return {
        "drained": drained,
        "devices_sent": sent,
        "devices_unanswered": unanswered,
        "hosts_took": taken,
        "lag_p99_s_since_start": _lag_since_start(hosts),
        "publish_lag_p99_s_since_start": _lag_since_start(hosts, "published"),
    }


def _lag_since_start(hosts: list[dict[str, Any]], since: str = "received") -> dict[str, float]:
    """Lag p99 per protocol over every sample since the hosts started (``since``: "received"
    from the edge, "published" from the device's own timestamp)."""
    buckets = lag_buckets(hosts, since)
    return {p: round(quantile(c, 0.99), 3) for p, c in sorted(buckets.items())}


def _cpu_seconds(
    cpu: _Cpu, processes: dict[str, dict[str, Any]], hosts: list[dict[str, Any]]
) -> dict[str, float | None]:
    seconds: dict[str, float | None] = {"driver": cpu.seconds(os.getpid())}
    for name, stats in processes.items():
        if "pid" in stats:
            seconds[name] = cpu.seconds(int(stats["pid"]))
    for host in hosts:
        if "pid" in host:
            seconds[str(host["host"])] = cpu.seconds(int(host["pid"]))
    return seconds


def _line(summary: dict[str, Any]) -> str:
    lags = ", ".join(
        f"{p} {f['messages_per_s']:.0f}/s lag p99 {f['lag_p99_s']:.2f}s"
        for p, f in summary["flow"].items()
    )
    return (
        f"twins {summary['twins']}, online {summary['online']}, anomalous "
        f"{summary['anomalous']}, {summary['updates_per_s']:.0f} updates/s"
        + (f"; {lags}" if lags else "")
    )


def _screen(
    summary: dict[str, Any], processes: dict[str, dict[str, Any]], where: dict[str, str]
) -> Group:
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold")
    header.add_column()
    for name, value in where.items():
        header.add_row(name, value)
    fleet = Table(title="fleet", title_justify="left")
    for column in ("twins", "online", "anomalous", "updates/s", "applied", "rejected"):
        fleet.add_column(column, justify="right")
    fleet.add_row(
        f"{summary['twins']:,}",
        f"{summary['online']:,}",
        f"{summary['anomalous']:,}",
        f"{summary['updates_per_s']:,.0f}",
        f"{summary['applied']:,}",
        f"{summary['rejected']:,}",
    )
    flow = Table(title="ingest", title_justify="left")
    for column in ("protocol", "messages/s", "lag p50", "lag p99"):
        flow.add_column(column, justify="right")
    for protocol, figures in summary["flow"].items():
        flow.add_row(
            protocol,
            f"{figures['messages_per_s']:,.0f}",
            f"{figures['lag_p50_s']:.2f} s",
            f"{figures['lag_p99_s']:.2f} s",
        )
    edges = Text(
        "edges: "
        + ", ".join(
            f"{name} {'up' if stats.get('up') else 'DOWN'}"
            + (f" ({stats['restarts']} restarts)" if stats.get("restarts") else "")
            for name, stats in processes.items()
        ),
        style="dim",
    )
    return Group(header, fleet, flow, edges)
