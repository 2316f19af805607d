"""Direct host calls over TCP (``runtime/wire.py``), without Ray: a real loopback socket."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from twinfleet.errors import (
    ConnectionLost,
    InternalError,
    InvalidRequest,
    TwinNotFound,
    VersionConflict,
)
from twinfleet.runtime.wire import Endpoint, HostChannel, HostServer


class Target:
    """Stands in for a host: a few coroutines, one of them slow, one failing."""

    def __init__(self) -> None:
        self.calls = 0

    async def echo(self, value: Any, *, twice: bool = False) -> Any:
        self.calls += 1
        return [value, value] if twice else value

    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    async def conflict(self, twin_id: str) -> None:
        raise VersionConflict(twin_id, 3, 5)

    async def missing(self, twin_id: str) -> None:
        raise TwinNotFound(twin_id)

    async def broken(self) -> None:
        raise KeyError("a bug")

    async def secret(self) -> str:
        return "never reachable: not in the method list"


METHODS = ("echo", "slow", "conflict", "missing", "broken")


async def served(target: Target) -> tuple[HostServer, HostChannel]:
    server = HostServer(target, METHODS)
    endpoint = await server.start("127.0.0.1")

    async def resolve() -> Endpoint:
        return endpoint

    return server, HostChannel(resolve)


async def test_calls_answer_and_run_concurrently() -> None:
    server, channel = await served(Target())
    try:
        assert await channel.call("echo", ({"a": [1, 2.5, None]},)) == {"a": [1, 2.5, None]}
        assert await channel.call("echo", ("x",), {"twice": True}) == ["x", "x"]
        # Many calls in flight on one connection; a slow one does not hold the others up.
        slow = asyncio.ensure_future(channel.call("slow", (0.5,)))
        results = await asyncio.wait_for(
            asyncio.gather(*(channel.call("echo", (i,)) for i in range(200))), timeout=0.4
        )
        assert results == list(range(200))
        assert await slow == "done"
    finally:
        await channel.close()
        await server.close()


async def test_errors_come_back_as_their_own_types() -> None:
    server, channel = await served(Target())
    try:
        with pytest.raises(VersionConflict) as conflict:
            await channel.call("conflict", ("pump-1",))
        assert (conflict.value.twin_id, conflict.value.expected, conflict.value.actual) == (
            "pump-1",
            3,
            5,
        )
        assert conflict.value.code == "version_conflict"
        assert conflict.value.field == "version"
        with pytest.raises(TwinNotFound, match="pump-2"):
            await channel.call("missing", ("pump-2",))
        with pytest.raises(InternalError, match="KeyError"):
            await channel.call("broken")
        with pytest.raises(InternalError, match="no direct method 'secret'"):
            await channel.call("secret")
        with pytest.raises(InvalidRequest, match="echo: a value cannot be sent: Integer exceeds"):
            await channel.call("echo", ({"n": 2**70},))  # the caller's error, not a lost line
        assert await channel.call("echo", (1,)) == 1  # the connection survived all of that
    finally:
        await channel.close()
        await server.close()


async def test_a_wrong_key_is_refused() -> None:
    target = Target()
    server = HostServer(target, METHODS)
    endpoint = await server.start("127.0.0.1")

    async def resolve() -> Endpoint:
        return Endpoint(endpoint.host, endpoint.port, "not-the-key")

    channel = HostChannel(resolve, retries=1)
    try:
        with pytest.raises(ConnectionLost):
            await channel.call("echo", (1,))
        assert target.calls == 0
    finally:
        await channel.close()
        await server.close()


async def test_a_restarted_host_is_found_again() -> None:
    """The connection drops (host restarted on a new port): the call goes to the new one."""
    target = Target()
    first = HostServer(target, METHODS)
    endpoints = [await first.start("127.0.0.1")]

    async def resolve() -> Endpoint:
        return endpoints[-1]

    channel = HostChannel(resolve)
    second = HostServer(target, METHODS)
    try:
        assert await channel.call("echo", ("before",)) == "before"
        await first.close()
        endpoints.append(await second.start("127.0.0.1"))
        assert endpoints[1].port != endpoints[0].port
        assert await channel.call("echo", ("after",)) == "after"
    finally:
        await channel.close()
        await second.close()


async def _dropped_mid_call(*, resend: bool) -> tuple[asyncio.Future[Any], list[int]]:
    """A slow call whose connection the host side aborts while it runs; how often the
    channel asked where the host is (a list, so it can be read after the call ends)."""
    server = HostServer(Target(), METHODS)
    endpoint = await server.start("127.0.0.1")
    resolved = [0]

    async def resolve() -> Endpoint:
        resolved[0] += 1
        return endpoint

    channel = HostChannel(resolve)
    call = asyncio.ensure_future(channel.call("slow", (0.3,), resend=resend))
    await asyncio.sleep(0.1)
    for writer in list(server._connections):
        writer.transport.abort()

    async def finished() -> Any:
        try:
            return await call
        finally:
            await channel.close()
            await server.close()

    return asyncio.ensure_future(finished()), resolved


async def test_a_call_in_flight_when_the_connection_drops_is_sent_again() -> None:
    call, resolved = await _dropped_mid_call(resend=True)
    assert await call == "done"
    assert resolved[0] == 2


async def test_a_call_that_may_not_be_resent_fails_when_its_connection_drops() -> None:
    """Not idempotent and no call id: the host may have applied it, so it is not sent again."""
    call, resolved = await _dropped_mid_call(resend=False)
    with pytest.raises(ConnectionLost):
        await call
    assert resolved[0] == 1


async def test_an_error_code_this_side_does_not_know_is_internal() -> None:
    """A newer host's error the caller cannot interpret is the platform's (500), not a 400."""

    class Newer(Target):
        async def echo(self, value: Any, *, twice: bool = False) -> Any:
            from twinfleet.errors import ERRORS_BY_CODE, TwinfleetError

            class FromTheFuture(TwinfleetError):
                code = "from_the_future"

            try:
                raise FromTheFuture("a code of a later version")
            finally:
                ERRORS_BY_CODE.pop("from_the_future", None)

    server, channel = await served(Newer())
    try:
        with pytest.raises(InternalError, match="from_the_future"):
            await channel.call("echo", (1,))
    finally:
        await channel.close()
        await server.close()
