"""The Influx line-protocol sink against a real VictoriaMetrics (Debian's), on a free port.

VictoriaMetrics takes InfluxDB writes on ``/api/v2/write`` and shows them on
``/api/v1/export`` as ``<measurement>_<field>{twin=...}``. Each test starts its own instance.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import eventually, free_port

from twinfleet.errors import StoreUnavailable
from twinfleet.runtime import DeviceMessage
from twinfleet.runtime.host import HostSettings, TwinHost
from twinfleet.runtime.stores import MemoryStore
from twinfleet.runtime.telemetry import (
    HistoryUnavailable,
    InfluxTelemetrySink,
    Point,
    open_telemetry,
)

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(
        shutil.which("victoria-metrics") is None,
        reason="needs Debian's victoria-metrics (scripts/test.sh installs it)",
    ),
]

QUIET = HostSettings(flush_interval_s=3600.0, sweep_interval_s=3600.0)


class Victoria:
    """A private VictoriaMetrics that a test can stop and start again (same port, same data)."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.data = data
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "victoria-metrics",
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.data}",
                "-loggerLevel=ERROR",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("VictoriaMetrics did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            self.proc = None

    def export(self) -> dict[tuple[str, str], list[tuple[int, float]]]:
        """(twin, metric) -> [(ms, value)] of everything written, once it is searchable."""
        httpx.get(f"{self.base}/internal/force_flush", timeout=10)
        response = httpx.get(
            f"{self.base}/api/v1/export",
            params={"match[]": '{__name__=~"telemetry_.*"}'},
            timeout=10,
        )
        response.raise_for_status()
        series = {}
        for line in response.text.splitlines():
            row = json.loads(line)
            metric = row["metric"]["__name__"].removeprefix("telemetry_")
            series[row["metric"]["twin"], metric] = list(
                zip(row["timestamps"], row["values"], strict=True)
            )
        return series

    def url(self) -> str:
        return f"influx://127.0.0.1:{self.port}?bucket=twinfleet&org=tests"


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[Victoria]:
    server = Victoria(tmp_path / "vm")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_points_arrive_as_line_protocol(victoria: Victoria) -> None:
    sink = open_telemetry(victoria.url())
    assert isinstance(sink, InfluxTelemetrySink)
    now = round(time.time()) - 60.0  # whole seconds: compared in milliseconds below
    sink.write(
        [
            Point("pump 7,a", "temperature", now, 21.5),
            Point("pump 7,a", "gps.lat", now, 48.137154),
            Point("pump 7,a", "$anomaly.score", now, 0.25),
            Point("pump-8", "temperature", now + 1.5, 22.0),
        ]
    )

    def written() -> bool:
        return victoria.export() == {
            ("pump 7,a", "temperature"): [(int(now * 1000), 21.5)],
            ("pump 7,a", "gps.lat"): [(int(now * 1000), 48.137154)],
            ("pump 7,a", "$anomaly.score"): [(int(now * 1000), 0.25)],
            ("pump-8", "temperature"): [(int(now * 1000) + 1500, 22.0)],
        }

    await eventually(written, what="the points in VictoriaMetrics")
    with pytest.raises(HistoryUnavailable, match="query it there"):
        sink.query("pump-8")
    with pytest.raises(HistoryUnavailable, match="query it there"):
        sink.query_many(["pump-8"])
    with pytest.raises(ValueError, match="not a finite number"):
        sink.write([Point("pump-8", "t", now, float("nan"))])
    sink.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("influx://127.0.0.1:8086", "names no bucket"),
        ("influx://127.0.0.1:8086?bucket=b&colour=red", "unknown Influx URL parameters: colour"),
        ("influx://?bucket=b", "malformed Influx URL"),
    ],
)
def test_bad_influx_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_telemetry(url)


async def test_a_sink_outage_loses_no_history(victoria: Victoria) -> None:
    """History waits in the host while the sink is down and is written once it is back."""
    host = TwinHost("h", MemoryStore(), settings=QUIET, telemetry=open_telemetry(victoria.url()))
    now = round(time.time()) - 120.0
    await host.apply([DeviceMessage("out-1", "telemetry", {"flow": 1.0}, now, "t", "smart-meter")])
    await host.flush()
    await eventually(lambda: series(victoria, "out-1", "flow") == [1.0])

    victoria.stop()
    for k in range(1, 4):
        reading = {"flow": 1.0 + k}
        await host.apply([DeviceMessage("out-1", "telemetry", reading, now + k, "t", None)])
        await host.flush()  # the sink is down: kept, retried next time
    stats = await host.stats()
    assert stats["history_errors"] == 3
    assert stats["history_dropped"] == 0
    with pytest.raises(StoreUnavailable):
        open_telemetry(victoria.url()).write([Point("x", "y", now, 1.0)])

    victoria.start()
    await host.flush()
    await eventually(lambda: series(victoria, "out-1", "flow") == [1.0, 2.0, 3.0, 4.0])
    stats = await host.stats()
    assert stats["history_points"] >= 4 + 4  # flow, and the model's scores beside it
    assert ("out-1", "$anomaly.score") in victoria.export()
    await host.stop()


def series(victoria: Victoria, twin: str, metric: str) -> list[float]:
    return [v for _, v in victoria.export().get((twin, metric), [])]
