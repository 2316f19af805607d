"""``HostCalls``: one interface, two transports with the same semantics, calls applied once."""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from twinfleet import Runtime
from twinfleet.errors import InternalError, TwinNotFound, VersionConflict
from twinfleet.runtime import DeviceMessage, RuntimeSettings, TwinHost
from twinfleet.runtime.calls import HOST_METHODS
from twinfleet.runtime.events import EVENT_TYPES
from twinfleet.runtime.stores import MemoryStore
from twinfleet.runtime.wire import Endpoint, HostChannel, HostServer

T0 = 1_700_000_000.0
RUNTIME = Path(__file__).resolve().parents[2] / "runtime"


# -- without Ray ------------------------------------------------------------------------------


def test_a_runtime_refuses_a_store_its_hosts_cannot_share() -> None:
    with pytest.raises(ValueError, match="memory://"):
        Runtime(store="memory://")


def test_the_event_types_are_the_ones_hosts_emit() -> None:
    """``EVENT_TYPES`` lists every type a host emits, and no other (clients filter by them)."""
    emitted: set[str] = set()
    for source in RUNTIME.rglob("*.py"):
        emitted.update(re.findall(r'\bemit\(\s*"(\w+)"', source.read_text()))
        emitted.update(re.findall(r'\bEvent\(\s*"(\w+)"', source.read_text()))
    assert emitted == set(EVENT_TYPES)


class _AnswerCutter:
    """A TCP proxy that drops the connection instead of passing on the host's first answer.

    So a call reaches the host and is applied, and its caller sees the line go down before
    the answer: the case in which a resend must not apply it again.
    """

    def __init__(self, target: Endpoint) -> None:
        self.target = target
        self.cut = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> Endpoint:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return Endpoint("127.0.0.1", port, self.target.key)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.target.host, self.target.port)

        async def upstream() -> None:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()

        forward = asyncio.ensure_future(upstream())
        try:
            while True:
                head = await up_reader.readexactly(4)
                body = await up_reader.readexactly(struct.unpack(">I", head)[0])
                if self.cut == 0:
                    self.cut += 1
                    writer.transport.abort()  # the answer never reaches the caller
                    return
                writer.write(head + body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            forward.cancel()
            up_writer.close()
            writer.close()


@pytest.fixture
def host() -> TwinHost:
    return TwinHost("h", MemoryStore())


async def test_a_command_resent_after_a_lost_answer_is_queued_once(host: TwinHost) -> None:
    await host.register({"id": "dev-1", "type": None, "tags": {}, "placement": "virtual"})
    server = HostServer(host, HOST_METHODS)
    cutter = _AnswerCutter(await server.start("127.0.0.1"))
    endpoint = await cutter.start()

    async def resolve() -> Endpoint:
        return endpoint

    channel = HostChannel(resolve)
    request = {"name": "ping", "params": {}, "timeout_s": 0, "ttl_s": 60}
    try:
        record = await channel.call(
            "send_command", ("dev-1", request), {"call_id": "call-1"}, resend=True
        )
        assert cutter.cut == 1  # the first answer was lost; the call was sent again
        assert (await host.stats())["commands_queued"] == 1  # one command, not two
        assert (await host.get_command("dev-1", record["id"]))["status"] == "queued"
        again = await channel.call("send_command", ("dev-1", request), {"call_id": "call-1"})
        assert again == record  # a repeated id gets the first answer
        assert (await host.stats())["commands_queued"] == 1
    finally:
        await channel.close()
        await cutter.close()
        await server.close()
        await host.stop()


# -- with Ray ---------------------------------------------------------------------------------


@pytest.fixture(params=["wire", "ray"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    settings = RuntimeSettings(hosts=2, transport=request.param)
    with Runtime(store=f"sqlite:///{tmp_path / 'state.db'}", settings=settings) as rt:
        yield rt


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_both_transports_answer_alike(runtime: Runtime) -> None:
    """The same calls give the same answers and the same errors on either transport."""
    runtime.ingest([DeviceMessage("a-1", "telemetry", {"temperature": 20.0}, ts=T0)])
    doc = runtime.twin("a-1").get()  # read-your-writes: the runtime's own message is there
    assert doc["reported"] == {"temperature": 20.0}
    assert runtime.twin("a-1").patch_desired({"mode": "eco"}, expected_version=1)["version"] == 2
    with pytest.raises(VersionConflict):
        runtime.twin("a-1").patch_desired({"mode": "off"}, expected_version=1)
    with pytest.raises(TwinNotFound):
        runtime.twin("nobody").get()
    record = runtime.send_command("a-1", "ping", timeout_s=0)
    assert record["status"] == "queued"
    assert runtime.command("a-1", record["id"])["id"] == record["id"]
    calls = runtime.calls()
    host = runtime.owner_of("a-1")

    async def outside_the_list() -> Any:
        try:
            return await calls.transport.call(host, "stop", (), {})
        finally:
            await calls.close()

    with pytest.raises(InternalError, match="'stop' is not a host call"):
        asyncio.run(outside_the_list())
    assert runtime.twin("a-1").get()["desired"] == {"mode": "eco"}  # the host still runs
