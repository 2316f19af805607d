"""``FlowMeter`` and ``quantile``: messages/s and lag percentiles from host stats."""

from __future__ import annotations

from typing import Any

import pytest

from twinfleet.runtime.flow import FlowMeter, quantile
from twinfleet.runtime.host.delays import LAG_BUCKETS, DelaySamples
from twinfleet.runtime.messages import DeviceMessage


def test_quantile_interpolates_inside_a_bucket() -> None:
    bounds = (1.0, 2.0, 4.0)
    assert quantile([0, 10, 10, 10], 0.5, bounds) == pytest.approx(1.5)
    assert quantile([10, 10, 10, 10], 0.99, bounds) == pytest.approx(0.99)
    assert quantile([0, 0, 0, 10], 0.5, bounds) == 4.0  # in +Inf: the last finite bound
    assert quantile([0, 0, 0, 0], 0.5, bounds) == 0.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        quantile([1], 1.5, bounds)


def _host(delays: DelaySamples) -> dict[str, Any]:
    return {"lag": delays.histograms(), "messages_by_protocol": delays.messages()}


def test_the_flow_between_two_reads_per_protocol() -> None:
    delays = DelaySamples()
    meter = FlowMeter()
    assert meter.update([_host(delays)], 100.0) == {}
    # 10 MQTT messages received 0.3 s before they were applied, 5 CoAP ones 3 s late
    mqtt = [
        DeviceMessage(f"m{i}", "telemetry", {"t": 1.0}, None, "mqtt", None, 99.7) for i in range(10)
    ]
    coap = [
        DeviceMessage(f"c{i}", "telemetry", {"t": 1.0}, None, "coap", None, 97.0) for i in range(5)
    ]
    delays.sample(mqtt, 100.0)
    delays.sample(coap, 100.0)
    flow = meter.update([_host(delays), {"host": "idle"}], 102.0)
    assert flow["mqtt"]["messages_per_s"] == 5.0
    assert flow["coap"]["messages_per_s"] == 2.5
    assert 0.25 < flow["mqtt"]["lag_p99_s"] <= 0.5
    assert 2.0 < flow["coap"]["lag_p99_s"] <= 5.0
    # nothing new: no messages, no lag samples in the window
    flow = meter.update([_host(delays)], 103.0)
    assert flow["mqtt"]["messages_per_s"] == 0.0
    assert flow["mqtt"]["lag_samples"] == 0.0


def test_a_restarted_host_never_makes_a_negative_rate() -> None:
    busy, fresh = DelaySamples(), DelaySamples()
    busy.sample([DeviceMessage("a", "telemetry", {}, None, "mqtt", None, 1.0)] * 4, 1.0)
    meter = FlowMeter()
    meter.update([_host(busy)], 1.0)
    assert meter.update([_host(fresh)], 2.0)["mqtt"]["messages_per_s"] == 0.0


def test_the_buckets_are_sorted() -> None:
    assert list(LAG_BUCKETS) == sorted(LAG_BUCKETS)
