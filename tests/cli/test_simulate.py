"""``twinfleet simulate`` run as a user runs it: the console script, against the local Mosquitto.

Waits are bounded; nothing is timed. Each test uses a device-id prefix of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import aiomqtt
import pytest
from helpers import eventually

pytestmark = pytest.mark.services

TWINFLEET = Path(sys.executable).with_name("twinfleet")
BROKER = ("127.0.0.1", 1883)
WAIT_S = 60.0


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINFLEET_")}
    env.update(extra or {})
    return env


@pytest.fixture
def prefix() -> str:
    """A device-id prefix no other test uses."""
    return f"c{uuid.uuid4().hex[:10]}"


@asynccontextmanager
async def _statuses(prefix: str) -> AsyncIterator[dict[str, list[str]]]:
    """``devices/+/status`` payloads of the devices with ``prefix``, per device, in order."""
    seen: dict[str, list[str]] = {}
    async with aiomqtt.Client(*BROKER, identifier=f"{prefix}-watch") as client:
        await client.subscribe("devices/+/status", qos=1)

        async def record() -> None:
            async for message in client.messages:
                device = message.topic.value.split("/")[1]
                if device.startswith(prefix + "-"):
                    assert isinstance(message.payload, bytes)
                    seen.setdefault(device, []).append(message.payload.decode())

        task = asyncio.create_task(record())
        try:
            yield seen
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


@asynccontextmanager
async def _simulate(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        str(TWINFLEET),
        "simulate",
        *args,
        cwd=cwd,
        env=_env(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


async def _finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_options_from_the_environment_and_a_json_summary(prefix: str, tmp_path: Path) -> None:
    env = {
        "TWINFLEET_DEVICES": "20",
        "TWINFLEET_INTERVAL": "0.2",
        "TWINFLEET_CONNECTIONS": "4",
        "TWINFLEET_DURATION": "3",
        "TWINFLEET_LABELS": str(tmp_path / "labels.jsonl"),
        "TWINFLEET_ANOMALY_RATE": "0.2",
        "TWINFLEET_PREFIX": prefix,
        "TWINFLEET_JSON": "1",
    }
    async with _simulate(env=env, cwd=tmp_path) as proc:
        code, out, err = await _finish(proc)
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["devices"] == 20
    assert summary["sent"] > 20
    assert summary["online"] == 0  # everyone said offline on the way out
    labels = (tmp_path / "labels.jsonl").read_text().splitlines()
    assert len(labels) == summary["anomalies"] > 0
    assert all(json.loads(line)["device_id"].startswith(prefix) for line in labels)


async def test_sigterm_stops_cleanly_and_devices_say_offline(prefix: str, tmp_path: Path) -> None:
    args = ("--devices", "6", "--connections", "2", "--interval", "0.5", "--prefix", prefix)
    async with _statuses(prefix) as seen, _simulate(*args, cwd=tmp_path) as proc:
        await eventually(
            lambda: len(seen) == 6 and all(s == ["online"] for s in seen.values()), timeout=WAIT_S
        )
        proc.send_signal(signal.SIGTERM)
        code, out, err = await _finish(proc)
        assert code == 0, err
        assert "stopped" in out
        await eventually(
            lambda: all(s == ["online", "offline"] for s in seen.values()), timeout=WAIT_S
        )


async def test_a_killed_process_leaves_a_last_will_per_device(prefix: str, tmp_path: Path) -> None:
    # one connection per device: each connection's last will speaks for its own device
    args = ("--devices", "3", "--connections", "3", "--interval", "0.5", "--prefix", prefix)
    async with _statuses(prefix) as seen, _simulate(*args, cwd=tmp_path) as proc:
        await eventually(
            lambda: len(seen) == 3 and all(s == ["online"] for s in seen.values()), timeout=WAIT_S
        )
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        await eventually(
            lambda: all(s == ["online", "offline"] for s in seen.values()), timeout=WAIT_S
        )


async def test_bad_options_are_refused_before_connecting(tmp_path: Path) -> None:
    async with _simulate("--devices", "2", "--connections", "3", cwd=tmp_path) as proc:
        code, _, err = await _finish(proc)
    assert code == 2
    assert "connections must be between 1 and the number of devices" in err
