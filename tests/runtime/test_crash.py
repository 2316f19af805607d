"""A runtime killed with SIGKILL loses no acknowledged desired write, and reported state no
older than the write-behind window."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from twinfleet import Runtime

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

WRITER = Path(__file__).with_name("crash_writer.py")
FLUSH_WINDOW_S = 0.5  # the writer's HostSettings.flush_interval_s
SLACK_S = 2.0  # one flush in progress, scheduling on a busy 2-core machine


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def store_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def test_sigkill_loses_no_acknowledged_write(store_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "RAY_ADDRESS": ""}
    child = subprocess.Popen(
        [sys.executable, str(WRITER), store_url],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "writer.log").open("w"),
        text=True,
        env=env,
        start_new_session=True,  # its own process group: the kill takes its Ray with it
    )
    acked: dict[str, int] = {}
    last_ts = 0.0
    started = None
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("READY"):
                started = time.monotonic()
                continue
            _, seq, twin, ts = line.split()
            acked[twin] = int(seq)
            last_ts = float(ts)
            if started is not None and len(acked) == 20 and time.monotonic() - started > 3:
                break
        else:
            pytest.fail(f"writer ended early: {(tmp_path / 'writer.log').read_text()[-2000:]}")
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    time.sleep(1)  # let the dead driver's Ray processes go

    with Runtime(store=store_url) as rt:
        for twin, seq in acked.items():
            doc = rt.twin(twin).get()
            assert doc["desired"]["seq"] >= seq, f"{twin} lost acknowledged desired seq {seq}"
            reported_at = doc["metadata"]["reported"]["seq"]
            assert reported_at >= last_ts - FLUSH_WINDOW_S - SLACK_S, (
                f"{twin}: reported state is {last_ts - reported_at:.2f} s old"
            )
