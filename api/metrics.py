"""Prometheus metrics of the runtime and the API, served unauthenticated on ``GET /metrics``.

The runtime's counters are read on scrape (:class:`RuntimeCollector`), not pushed: the hosts
already count, so the hot path pays nothing for metrics. API request latencies are observed
by an ASGI middleware into a histogram labelled by route template, not raw path, so twin ids
do not become label values.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twinfleet.runtime.host.delays import LAG_BUCKETS

__all__ = [
    "API_LATENCY_BUCKETS",
    "EDGE_COUNTERS",
    "HOST_COUNTERS",
    "HOST_GAUGES",
    "ApiLatencyMiddleware",
    "EdgeCollector",
    "EdgeStatsSource",
    "RuntimeCollector",
    "StatsSource",
    "install_metrics",
]

log = logging.getLogger(__name__)


# Host stats key -> (metric name without ``_total``, help). Counters only ever rise per host
# process; a restarted host starts again from zero, which ``rate()`` handles as a reset.
HOST_COUNTERS: Mapping[str, tuple[str, str]] = {
    "applied": ("twinfleet_messages_applied", "Device messages applied to twins."),
    "stale": ("twinfleet_messages_stale", "Device messages dropped as older than the twin."),
    "rejected": ("twinfleet_messages_rejected", "Device messages rejected as invalid."),
    "snapshots": ("twinfleet_snapshots_written", "Twin snapshots written to the state store."),
    "commits": ("twinfleet_commits", "Durable writes (desired, tags, commands) committed."),
    "commands_queued": ("twinfleet_commands_queued", "Commands queued for devices."),
    "commands_answered": ("twinfleet_commands_answered", "Commands answered by devices."),
    "events": ("twinfleet_events", "Twin events published."),
    "history_points": ("twinfleet_telemetry_points", "Telemetry points written to history."),
    "history_dropped": (
        "twinfleet_telemetry_points_dropped",
        "Telemetry points dropped while the history sink was down or behind, past the buffer.",
    ),
    "history_expired": (
        "twinfleet_telemetry_points_expired",
        "Telemetry points deleted from the embedded history by retention.",
    ),
    "history_errors": (
        "twinfleet_telemetry_write_errors",
        "Failed writes to the history sink (points kept and retried).",
    ),
    "passivated": ("twinfleet_twins_passivated", "Idle twins passivated out of memory."),
    "activated": ("twinfleet_twins_activated", "Twins activated from the state store."),
    "created": ("twinfleet_twins_created", "Twins created for devices seen the first time."),
    "offline": ("twinfleet_twins_went_offline", "Twins marked offline after silence."),
    "flushes": ("twinfleet_flushes", "Write-behind flushes of dirty twins."),
    "flush_errors": ("twinfleet_flush_errors", "Write-behind flushes that failed."),
}

# Host stats key -> (metric name, help): sizes now, not totals.
HOST_GAUGES: Mapping[str, tuple[str, str]] = {
    "active": ("twinfleet_twins_active", "Twins in memory."),
    "dirty": ("twinfleet_twins_dirty", "Twins in memory with changes not yet flushed."),
    "online": ("twinfleet_twins_online", "Twins in memory whose device is online."),
    "anomalous": ("twinfleet_twins_anomalous", "Twins in memory flagged anomalous."),
    "rss_bytes": ("twinfleet_host_rss_bytes", "Resident memory of the host process."),
}

API_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

_UNMATCHED = "<unmatched>"


class StatsSource(Protocol):
    """What the collector reads: :class:`twinfleet.runtime.Runtime` has it."""

    def stats(self) -> dict[str, Any]:
        """Per-host counters and the router's totals."""
        ...


class RuntimeCollector(Collector):
    """Exposes ``runtime.stats()`` as per-host series; reads it at most once per ``cache_s``."""

    def __init__(
        self,
        runtime: StatsSource,
        *,
        cache_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runtime = runtime
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()  # concurrent scrapes share one stats() call
        self._stats: dict[str, Any] | None = None
        self._read_at = float("-inf")

    def describe(self) -> Iterable[Metric]:
        """The families without samples, so registering does not call the runtime."""
        return list(self._families({}, [], up=False, in_flight=None, buffered=None))

    def collect(self) -> Iterable[Metric]:
        """The families with the runtime's current values (cached for ``cache_s``)."""
        stats = self._read()
        up = stats is not None
        stats = stats or {}
        hosts = [*stats.get("hosts", ()), *stats.get("dedicated_hosts", ())]
        in_flight, buffered = _router_depths(self._runtime)
        return list(self._families(stats, hosts, up=up, in_flight=in_flight, buffered=buffered))

    def _read(self) -> dict[str, Any] | None:
        with self._lock:
            now = self._clock()
            if now - self._read_at >= self._cache_s:
                self._read_at = now
                try:
                    self._stats = self._runtime.stats()
                except Exception:  # a scrape must still answer, with runtime_up 0
                    log.exception("reading runtime stats for /metrics failed")
                    self._stats = None
            return self._stats

    @staticmethod
    def _families(
        stats: Mapping[str, Any],
        hosts: list[Mapping[str, Any]],
        *,
        up: bool,
        in_flight: int | None,
        buffered: int | None,
    ) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "twinfleet_runtime_up", "1 if the last read of runtime stats succeeded.", value=int(up)
        )
        for key, (name, doc) in HOST_COUNTERS.items():
            counter = CounterMetricFamily(name, doc, labels=["host"])
            for host in hosts:
                counter.add_metric([str(host["host"])], float(host.get(key, 0)))
            yield counter
        for key, (name, doc) in HOST_GAUGES.items():
            gauge = GaugeMetricFamily(name, doc, labels=["host"])
            for host in hosts:
                gauge.add_metric([str(host["host"])], float(host.get(key, 0)))
            yield gauge
        yield _lag_histogram(hosts)
        by_protocol = CounterMetricFamily(
            "twinfleet_messages_by_protocol",
            "Device messages a host applied or refused, by the protocol they came by.",
            labels=["host", "protocol"],
        )
        for host in hosts:
            for protocol, n in sorted(host.get("messages_by_protocol", {}).items()):
                by_protocol.add_metric([str(host["host"]), str(protocol)], float(n))
        yield by_protocol
        hosts_gauge = GaugeMetricFamily(
            "twinfleet_hosts", "Twin hosts running, shared or dedicated.", labels=["kind"]
        )
        if up:
            hosts_gauge.add_metric(["shared"], len(stats.get("hosts", ())))
            hosts_gauge.add_metric(["dedicated"], len(stats.get("dedicated_hosts", ())))
        yield hosts_gauge
        batches = CounterMetricFamily(
            "twinfleet_router_batches", "Message batches the router sent to hosts."
        )
        failed = CounterMetricFamily(
            "twinfleet_router_failed", "Messages in batches a host failed to apply."
        )
        if up:
            batches.add_metric([], float(stats.get("batches", 0)))
            failed.add_metric([], float(stats.get("failed", 0)))
        yield batches
        yield failed
        if in_flight is not None:
            yield GaugeMetricFamily(
                "twinfleet_router_in_flight_batches",
                "Batches sent to hosts and not yet answered.",
                value=in_flight,
            )
        if buffered is not None:
            yield GaugeMetricFamily(
                "twinfleet_router_buffered_messages",
                "Messages queued in the router, not yet sent.",
                value=buffered,
            )


def _lag_histogram(hosts: list[Mapping[str, Any]]) -> HistogramMetricFamily:
    """``twinfleet_message_lag_seconds``: per host, protocol and what it counts from."""
    family = HistogramMetricFamily(
        "twinfleet_message_lag_seconds",
        "Delay of device messages until their twin applied them, from when the edge received "
        "them (since=received) or the device measured them (since=published); sampled, up to "
        "16 messages a batch.",
        labels=["host", "protocol", "since"],
    )
    for host in hosts:
        for histogram in host.get("lag", ()):
            cumulative = histogram["buckets"]
            family.add_metric(
                [str(host["host"]), str(histogram["protocol"]), str(histogram["kind"])],
                [
                    *zip((str(b) for b in LAG_BUCKETS), cumulative[:-1], strict=True),
                    ("+Inf", cumulative[-1]),
                ],
                sum_value=float(histogram["sum"]),
            )
    return family


#: An edge process's stats key -> (metric name without ``_total``, help), for the counters a
#: gateway (``gateway-N``) or the CoAP endpoint (``coap``) keeps.
EDGE_COUNTERS: Mapping[str, Mapping[str, tuple[str, str]]] = {
    "gateway": {
        "received": ("twinfleet_gateway_messages_received", "MQTT messages a gateway read."),
        "decoded": ("twinfleet_gateway_messages_decoded", "MQTT messages decoded."),
        "ingested": (
            "twinfleet_gateway_messages_ingested",
            "Device messages a gateway handed to the hosts.",
        ),
        "batches": ("twinfleet_gateway_batches", "Batches a gateway handed to the hosts."),
        "published": ("twinfleet_gateway_published", "Desired documents and commands published."),
        "reconnects": ("twinfleet_gateway_reconnects", "Connections to the broker made again."),
        "errors": ("twinfleet_gateway_errors", "Unexpected failures inside a gateway."),
    },
    "coap": {
        "requests": ("twinfleet_coap_requests", "CoAP requests the endpoint answered."),
        "messages": ("twinfleet_coap_messages_ingested", "Device messages handed to the hosts."),
        "batches": ("twinfleet_coap_batches", "Batches the CoAP endpoint handed to the hosts."),
        "errors": ("twinfleet_coap_errors", "Unexpected failures inside the CoAP endpoint."),
    },
}


class EdgeStatsSource(Protocol):
    """What the edge collector reads: ``twinfleet up``'s edges (``cli.edges.Edges``)."""

    def stats(self) -> Mapping[str, Any]:
        """``{"processes": {name: stats}}``, each with ``up``, ``restarts``, ``pid``."""
        ...


def _edge_kind(name: str) -> str:
    return name.split("-", 1)[0]


class EdgeCollector(Collector):
    """The edge processes of ``twinfleet up``: up, restarts, CPU, and gateway and CoAP
    counters (received, decoded, rejected by code, batches, queue depth)."""

    def __init__(self, edges: EdgeStatsSource) -> None:
        self._edges = edges
        self._processes: dict[int, Any] = {}

    def describe(self) -> Iterable[Metric]:
        """The families without samples."""
        return list(self._families({}))

    def collect(self) -> Iterable[Metric]:
        """The families with the edges' latest stats (the supervisor refreshes them)."""
        try:
            processes = dict(self._edges.stats().get("processes", {}))
        except Exception:
            log.exception("reading edge stats for /metrics failed")
            processes = {}
        return list(self._families(processes))

    def _cpu_seconds(self, pid: Any) -> float | None:
        import psutil  # only where edges are served (twinfleet up)

        if not isinstance(pid, int):
            return None
        try:
            process = self._processes.get(pid)
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
            times = process.cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)

    def _families(self, processes: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "twinfleet_edge_up", "1 if an edge process answers and has started.", labels=["edge"]
        )
        restarts = CounterMetricFamily(
            "twinfleet_edge_restarts",
            "Times an edge process was started again after it died.",
            labels=["edge"],
        )
        cpu = CounterMetricFamily(
            "twinfleet_edge_cpu_seconds", "CPU time of an edge process.", labels=["edge"]
        )
        for name, stats in sorted(processes.items()):
            up.add_metric([name], float(bool(stats.get("up"))))
            restarts.add_metric([name], float(stats.get("restarts", 0)))
            seconds = self._cpu_seconds(stats.get("pid"))
            if seconds is not None:
                cpu.add_metric([name], seconds)
        yield up
        yield restarts
        yield cpu
        for kind, counters in EDGE_COUNTERS.items():
            mine = {n: s for n, s in processes.items() if _edge_kind(n) == kind}
            for key, (metric, doc) in counters.items():
                family = CounterMetricFamily(metric, doc, labels=["edge"])
                for name, stats in sorted(mine.items()):
                    family.add_metric([name], float(stats.get(key, 0)))
                yield family
            rejected = CounterMetricFamily(
                f"twinfleet_{kind}_messages_rejected",
                f"Device messages the {kind} refused, by error code.",
                labels=["edge", "code"],
            )
            for name, stats in sorted(mine.items()):
                for key, value in sorted(stats.items()):
                    if key.startswith("rejected:"):
                        rejected.add_metric([name, key.split(":", 1)[1]], float(value))
            yield rejected
            queue = GaugeMetricFamily(
                f"twinfleet_{kind}_queue_messages",
                f"Messages inside the {kind} not yet handed to the hosts.",
                labels=["edge"],
            )
            for name, stats in sorted(mine.items()):
                queue.add_metric(
                    [name], float(stats.get("queued", 0)) + float(stats.get("routed_buffered", 0))
                )
            yield queue


def _router_depths(runtime: object) -> tuple[int | None, int | None]:
    """The router's in-flight batches and buffered messages, where the runtime exposes them."""
    # ``Runtime.router`` and the router's ``in_flight``/``buffered`` are not public yet:
    # until they are, these gauges are simply absent.
    router = getattr(runtime, "router", None)
    if router is None:
        return None, None

    def read(name: str) -> int | None:
        value = getattr(router, name, None)
        if callable(value):
            value = value()
        return int(value) if isinstance(value, int | float) else None

    try:
        return read("in_flight"), read("buffered")
    except Exception:  # a depth is nice to have; never fail the scrape for it
        log.exception("reading router depths for /metrics failed")
        return None, None


class ApiLatencyMiddleware:
    """Observes each HTTP request's time to its response headers, by method, route and status.

    Time to headers, not to the last byte: the event stream answers for as long as a client
    listens, and its latency is how soon it starts.
    """

    def __init__(self, app: ASGIApp, *, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request; the route template is known once the router has matched it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering
        observed = False

        def observe() -> None:
            nonlocal observed
            if not observed:
                observed = True
                self.histogram.labels(scope["method"], _route_template(scope), str(status)).observe(
                    time.perf_counter() - start
                )

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                observe()
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            observe()


def _route_template(scope: Scope) -> str:
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else _UNMATCHED


def install_metrics(
    app: FastAPI,
    runtime: StatsSource,
    *,
    edges: EdgeStatsSource | None = None,
    cache_s: float = 1.0,
) -> None:
    """Add the API latency middleware and an unauthenticated ``GET /metrics`` to ``app``;
    with ``edges``, the edge processes' metrics too.

    Each app gets a registry of its own, so several apps in one process do not clash.
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(RuntimeCollector(runtime, cache_s=cache_s))
    if edges is not None:
        registry.register(EdgeCollector(edges))
    histogram = Histogram(
        "twinfleet_api_request_seconds",
        "HTTP API requests: time to response headers, by method, route template and status.",
        labelnames=("method", "route", "status"),
        buckets=API_LATENCY_BUCKETS,
        registry=registry,
    )
    app.add_middleware(ApiLatencyMiddleware, histogram=histogram)

    async def metrics() -> Response:
        """Prometheus text exposition of the runtime's and the API's metrics."""
        # stats() waits on Ray: keep it off the event loop.
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], tags=["operations"])
