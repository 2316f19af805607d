"""Helpers the tests share: free ports, waiting, the API on uvicorn, clocks and messages.

Fixtures live in the ``conftest.py`` files; this module holds the plain code they and the tests
call (``from helpers import ...``: ``tests/`` is on pytest's ``pythonpath``). Heavy imports wait
until a helper needs them, so the quick tests that import this module do not pay for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import inspect
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twinfleet.runtime.messages import DeviceMessage

if TYPE_CHECKING:
    import aiomqtt
    import httpx
    from starlette.types import ASGIApp

    from twinfleet import Runtime
    from twinfleet.api.auth import TokenStore
    from twinfleet.runtime.telemetry import TelemetrySink

T0 = 1_800_000_000.0  # the time of the readings the ``served`` API starts with


# -- ports and waiting ----------------------------------------------------------------------------


def free_port(*, udp: bool = False) -> int:
    """A TCP (or UDP) port on 127.0.0.1 that nothing listens on right now."""
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


async def eventually(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    *,
    what: str = "condition",
    retry_errors: bool = True,
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy, and return that.

    Fails after ``timeout`` s. Exceptions count as "not yet" (a twin that does not exist yet);
    with ``retry_errors=False`` the first one fails the test, for predicates that assert.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except Exception as err:
            if not retry_errors:
                raise
            last = err
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s (last error: {last})")
        await asyncio.sleep(0.02)


async def settle() -> None:
    """Let every task that can run, run (a few loop turns: a blocked task stays blocked)."""
    for _ in range(20):
        await asyncio.sleep(0)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock on."""
        self.now += seconds

    def set(self, now: float) -> None:
        """Set the clock to ``now``."""
        self.now = now


# -- messages -------------------------------------------------------------------------------------


def telemetry(
    twin_id: str,
    ts: float | None = None,
    protocol: str = "mqtt",
    device_type: str | None = "smart-sensor",
    received: float | None = None,
    **values: Any,
) -> DeviceMessage:
    """A telemetry message of ``values`` from a device (a smart sensor over MQTT unless told);
    ``received``: when an edge got it."""
    return DeviceMessage(twin_id, "telemetry", values, ts, protocol, device_type, received)


def nested(levels: int, leaf: Any = 1) -> dict[str, Any]:
    """An object ``levels`` objects deep: ``nested(1) == {"k": 1}``."""
    value: Any = leaf
    for _ in range(levels):
        value = {"k": value}
    return value


async def next_message(client: aiomqtt.Client, timeout: float = 10.0) -> aiomqtt.Message:
    """The next message ``client`` receives, within ``timeout`` s."""

    async def first() -> aiomqtt.Message:
        async for message in client.messages:
            return message
        raise AssertionError("the message stream ended")

    return await asyncio.wait_for(first(), timeout)


# -- the API over real HTTP -----------------------------------------------------------------------


@contextlib.contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the API did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class Served:
    """The API on a free port, its runtime, and tokens of every role (the ``served`` fixture)."""

    def __init__(
        self, runtime: Runtime, tokens: TokenStore, url: str, telemetry: TelemetrySink
    ) -> None:
        self.runtime = runtime
        self.store = tokens
        self.telemetry = telemetry
        self.url = url
        self.tokens = {
            role: tokens.create(role)[1]
            for role in ("admin", "operator", "developer", "data-scientist", "viewer")
        }

    def client(self, role: str | None = "admin") -> httpx.Client:
        """An HTTP client of the API with a token of ``role`` (``None``: no token)."""
        import httpx

        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class PrivateMosquitto:
    """A Mosquitto of this test's own, with a config the test writes; stop and start at will."""

    def __init__(self, folder: Path, listeners: str) -> None:
        self.folder = folder
        self.config = folder / "mosquitto.conf"
        # Run as the current user (root here would otherwise switch to 'mosquitto', who
        # cannot read the test's files); no persistence: a restart forgets everything.
        self.config.write_text(
            f"user {_user()}\npersistence false\nlog_dest stderr\nlog_type error\n{listeners}"
        )
        self.ports = [
            int(line.split()[1]) for line in listeners.splitlines() if line.startswith("listener ")
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.folder / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + 10
        while not all(port_open("127.0.0.1", p) for p in self.ports):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.folder / "mosquitto.log").read_text()
                raise RuntimeError(f"the private mosquitto did not start:\n{log}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


def _user() -> str:
    return getpass.getuser()
