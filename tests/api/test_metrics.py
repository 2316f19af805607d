"""``GET /metrics``: the runtime's per-host series, API latencies, and the Grafana dashboard."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import T0, Served, serving
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from twinfleet.api.app import create_app
from twinfleet.api.auth import TokenStore
from twinfleet.api.metrics import HOST_COUNTERS, HOST_GAUGES, RuntimeCollector
from twinfleet.runtime import DeviceMessage
from twinfleet.runtime.stores import open_store

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "twinfleet.json"
Samples = dict[str, list[tuple[dict[str, str], float]]]


class Metered:
    """The API with metrics installed, on a port of its own, around the shared runtime."""

    def __init__(self, runtime: Any, url: str, token: str) -> None:
        self.runtime = runtime
        self.url = url
        self.token = token

    def client(self, *, auth: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def scrape(self) -> Samples:
        with self.client(auth=False) as http:
            response = http.get("/metrics")
        assert response.status_code == 200
        return parse(response.text)


def parse(text: str) -> Samples:
    """Sample name -> [(labels, value)], for every sample of every family."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def total(samples: Samples, name: str) -> float:
    return sum(value for _, value in samples.get(name, []))


def wait_for(scrape: Callable[[], Samples], done: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``done`` (stats are cached for a second), for at most 20 s."""
    deadline = time.monotonic() + 20
    samples = scrape()
    while not done(samples) and time.monotonic() < deadline:
        time.sleep(0.25)
        samples = scrape()
    return samples


class FakeEdges:
    """``twinfleet up``'s edges as the edge collector reads them (their real stats are
    scraped from a running ``twinfleet up`` in tests/cli)."""

    def stats(self) -> dict[str, Any]:
        gateway = {"up": True, "restarts": 1, "pid": os.getpid(), "received": 10, "decoded": 9}
        gateway |= {"ingested": 8, "batches": 2, "rejected:malformed_payload": 1, "queued": 3}
        coap = {"up": True, "restarts": 0, "pid": os.getpid(), "requests": 5, "batches": 1}
        coap["rejected:unsupported_format"] = 2
        return {"processes": {"gateway-0": gateway, "coap": coap, "broker": {"up": False}}}


@pytest.fixture(scope="module")
def metered(served: Served) -> Iterator[Metered]:
    tokens = TokenStore(open_store("memory://"))
    app = create_app(served.runtime, tokens, edges=FakeEdges())  # it installs the metrics
    with serving(app) as url:
        yield Metered(served.runtime, url, tokens.create("admin")[1])


# -- over HTTP, on the shared Ray runtime ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_metrics_needs_no_token(metered: Metered) -> None:
    with metered.client(auth=False) as http:
        response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "twinfleet_runtime_up 1.0" in response.text


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_runtime_series_are_labelled_by_host(metered: Metered) -> None:
    samples = metered.scrape()
    names = [f"{name}_total" for name, _ in HOST_COUNTERS.values()]
    names += [name for name, _ in HOST_GAUGES.values()]
    for name in names:
        hosts = {labels.get("host") for labels, _ in samples.get(name, [])}
        assert len(hosts) >= 2, f"{name} has no series for each host: {hosts}"
        assert None not in hosts
    assert total(samples, "twinfleet_twins_active") >= 5  # the shared fixture's twins
    assert total(samples, "twinfleet_host_rss_bytes") > 0
    assert "twinfleet_router_batches_total" in samples
    assert "twinfleet_router_failed_total" in samples


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_counters_rise_after_ingest(metered: Metered) -> None:
    before = metered.scrape()
    applied = total(before, "twinfleet_messages_applied_total")
    batches = total(before, "twinfleet_router_batches_total")
    active = total(before, "twinfleet_twins_active")
    metered.runtime.ingest(
        DeviceMessage(
            f"metrics-{i}", "telemetry", {"temperature": 21.0}, T0 + i, "test", "smart-sensor"
        )
        for i in range(20)
    )
    metered.runtime.flush()
    after = wait_for(
        metered.scrape,
        lambda s: (
            total(s, "twinfleet_messages_applied_total") >= applied + 20
            and total(s, "twinfleet_twins_active") >= active + 20
        ),
    )
    assert total(after, "twinfleet_messages_applied_total") >= applied + 20
    assert total(after, "twinfleet_twins_active") >= active + 20
    assert total(after, "twinfleet_router_batches_total") > batches


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_api_latency_is_labelled_by_route_template(metered: Metered) -> None:
    with metered.client() as http:
        assert http.get("/api/v1/twins/api-0").status_code == 200
        assert http.get("/api/v1/twins/no-such-twin").status_code == 404
        assert http.get("/no/such/route").status_code == 404
    counts = metered.scrape()["twinfleet_api_request_seconds_count"]
    by_labels = {(lb["method"], lb["route"], lb["status"]): value for lb, value in counts}
    assert by_labels[("GET", "/api/v1/twins/{twin_id}", "200")] >= 1
    assert by_labels[("GET", "/api/v1/twins/{twin_id}", "404")] >= 1
    assert by_labels[("GET", "<unmatched>", "404")] >= 1
    assert not [key for key in by_labels if "api-0" in key[1] or "no-such" in key[1]]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_dashboard_uses_only_exposed_metrics(metered: Metered) -> None:
    with metered.client() as http:  # so the histogram has samples to expose
        http.get("/api/v1/twins/api-0")
    now = time.time()  # a message an edge received: the lag histograms have samples
    metered.runtime.ingest(
        [DeviceMessage("metrics-lag", "telemetry", {"t": 1.0}, now, "mqtt", None, now)]
    )
    metered.runtime.flush()
    exposed = set(wait_for(metered.scrape, lambda s: "twinfleet_message_lag_seconds_bucket" in s))
    dashboard = json.loads(DASHBOARD.read_text())
    assert 38 <= dashboard["schemaVersion"] <= 40
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\btwinfleet_[a-z0-9_]+", target["expr"]))
            assert names, f"{panel['title']}: {target['expr']}"
            assert names <= exposed, f"{panel['title']}: {sorted(names - exposed)} not exposed"


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_edge_metrics_name_each_edge_and_each_refusal_code(metered: Metered) -> None:
    samples = metered.scrape()
    up = {labels["edge"]: value for labels, value in samples["twinfleet_edge_up"]}
    assert up == {"broker": 0.0, "coap": 1.0, "gateway-0": 1.0}
    assert total(samples, "twinfleet_edge_restarts_total") == 1
    assert total(samples, "twinfleet_gateway_messages_received_total") == 10
    assert samples["twinfleet_gateway_messages_rejected_total"] == [
        ({"edge": "gateway-0", "code": "malformed_payload"}, 1.0)
    ]
    assert total(samples, "twinfleet_gateway_queue_messages") == 3
    assert total(samples, "twinfleet_coap_requests_total") == 5
    assert {labels["edge"] for labels, _ in samples["twinfleet_edge_cpu_seconds_total"]} == {
        "coap",
        "gateway-0",
    }


# -- the collector alone, without Ray ----------------------------------------------------------


class FakeRuntime:
    """``stats()`` as the runtime answers it, counting calls; optionally failing."""

    def __init__(self, *, router: object = None) -> None:
        self.calls = 0
        self.fail = False
        if router is not None:
            self.router = router

    def stats(self) -> dict[str, Any]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("the hosts are gone")
        host = dict.fromkeys((*HOST_COUNTERS, *HOST_GAUGES), self.calls)
        return {
            "hosts": [{**host, "host": "host-0"}, {**host, "host": "host-1"}],
            "dedicated_hosts": [{**host, "host": "dedicated-pump-7"}],
            "batches": 7,
            "failed": 1,
        }


def scrape(collector: RuntimeCollector) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)
    return parse(generate_latest(registry).decode())


@pytest.mark.usefixtures("no_ray")
def test_registering_does_not_read_stats() -> None:
    runtime = FakeRuntime()
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(runtime))
    assert runtime.calls == 0


@pytest.mark.usefixtures("no_ray")
def test_stats_are_read_at_most_once_per_cache_period() -> None:
    now = [100.0]
    runtime = FakeRuntime()
    collector = RuntimeCollector(runtime, cache_s=1.0, clock=lambda: now[0])
    first = scrape(collector)
    now[0] += 0.5
    assert scrape(collector) == first
    assert runtime.calls == 1
    now[0] += 0.6
    again = scrape(collector)
    assert runtime.calls == 2
    assert again["twinfleet_messages_applied_total"][0][1] == 2
    hosts = {lb["host"] for lb, _ in again["twinfleet_twins_active"]}
    assert hosts == {"host-0", "host-1", "dedicated-pump-7"}
    assert again["twinfleet_hosts"] == [({"kind": "shared"}, 2), ({"kind": "dedicated"}, 1)]
    assert again["twinfleet_router_batches_total"] == [({}, 7)]


@pytest.mark.usefixtures("no_ray")
def test_a_failing_runtime_still_answers_a_scrape() -> None:
    runtime = FakeRuntime()
    runtime.fail = True
    samples = scrape(RuntimeCollector(runtime))
    assert samples["twinfleet_runtime_up"] == [({}, 0)]
    assert "twinfleet_messages_applied_total" not in samples  # no host, no series


class FakeRouter:
    in_flight = 3

    def buffered(self) -> int:
        return 120


@pytest.mark.usefixtures("no_ray")
def test_router_depths_when_the_runtime_exposes_them() -> None:
    assert "twinfleet_router_in_flight_batches" not in scrape(RuntimeCollector(FakeRuntime()))
    samples = scrape(RuntimeCollector(FakeRuntime(router=FakeRouter())))
    assert samples["twinfleet_router_in_flight_batches"] == [({}, 3)]
    assert samples["twinfleet_router_buffered_messages"] == [({}, 120)]
