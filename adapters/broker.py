"""``EmbeddedBroker``: an MQTT broker for a platform with no services.

``twinfleet up`` without ``--mqtt`` runs one, in a child process of its own that exits with its
parent, chosen by measurement (``bench/brokers.py``, docs/benchmarks.md):

- ``mosquitto`` when the machine has the binary: the fastest of the three measured, and the
  only one that takes 10,000 devices subscribing to their own topics in stride; a config of
  its own (larger queues for absent sessions, more messages in flight per client, 128 KB
  payloads), sessions and retained messages kept in memory;
- ``rumqttd`` otherwise: the Rust broker packaged by ``iotcore``, which installs from PyPI
  with nothing else. 3.3x amqtt's throughput at a twelfth of its CPU per message, with the
  contract devices and gateways rely on (QoS 1 both ways, retained messages, last wills,
  shared subscriptions, persistent sessions that get again what they had not acknowledged);
  but it delivers only part of the messages to a share group whose members hold several
  filters (gateways take a group per filter), and 100 connections subscribing 16,000 device
  topics at once stall it for tens of seconds.

``kind="auto"`` (the default) takes Mosquitto when it is on ``PATH``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from twinfleet.twins import MAX_PAYLOAD_BYTES

from .mqtt import MqttSettings

if TYPE_CHECKING:
    from iotcore import Broker

__all__ = ["BROKER_KINDS", "EmbeddedBroker", "broker_kind"]

BrokerKind = Literal["auto", "mosquitto", "rumqttd"]
BROKER_KINDS: Final = ("auto", "mosquitto", "rumqttd")

log = logging.getLogger(__name__)

#: The largest MQTT packet the broker takes: a device payload at the platform's limit, with
#: room for its topic.
MAX_PACKET_BYTES: Final = MAX_PAYLOAD_BYTES + 4096
#: Unacknowledged QoS 1 messages in flight per connection (rumqttd's default is 100): a
#: gateway acknowledges in batches, once its twins applied them.
MAX_INFLIGHT: Final = 10_000


def broker_kind(kind: str = "auto") -> Literal["mosquitto", "rumqttd"]:
    """The broker ``kind`` stands for: ``auto`` is Mosquitto when its binary is on ``PATH``."""
    if kind not in BROKER_KINDS:
        raise ValueError(f"the embedded broker is one of {', '.join(BROKER_KINDS)}, not {kind!r}")
    if kind == "auto":
        return "mosquitto" if shutil.which("mosquitto") else "rumqttd"
    if kind == "mosquitto" and not shutil.which("mosquitto"):
        raise ValueError("no mosquitto binary on PATH: install Mosquitto or take rumqttd")
    return kind  # type: ignore[return-value]


class _Running(Protocol):
    @property
    def is_running(self) -> bool: ...

    def stop(self) -> None: ...


class EmbeddedBroker:
    """An embedded broker on ``host:port`` (port 0 or None: a free one) for the ``async with``.

    ``url`` is ``mqtt://host:port`` once entered; ``settings()`` gives a gateway's settings
    for it. ``start`` raises ``OSError`` (``EADDRINUSE``) when the port is taken.
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int | None = None, kind: str = "auto"
    ) -> None:
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(f"port must lie between 0 and 65535, not {port}")
        self.host = host
        self.kind = broker_kind(kind)
        self._requested_port = port or 0
        self._port: int | None = None
        self._broker: _Running | None = None

    @property
    def port(self) -> int:
        """The port the broker listens on (only while running)."""
        if self._port is None:
            raise RuntimeError("the embedded broker is not running")
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the running broker."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id (while running)."""
        process = getattr(self._broker, "_process", None)
        return None if process is None else int(process.pid)

    def settings(self, **options: Any) -> MqttSettings:
        """Gateway settings for this broker."""
        return MqttSettings.from_url(self.url, **options)

    async def start(self) -> None:
        """Start listening (``async with`` calls this)."""
        if self._broker is not None:
            raise RuntimeError("the embedded broker is already running")
        port = self._requested_port or _free_port(self.host)
        _check_free(self.host, port)
        broker: _Running
        if self.kind == "mosquitto":
            broker = await asyncio.to_thread(_Mosquitto, self.host, port)
        else:
            broker = await asyncio.to_thread(_start_rumqttd, self.host, port)
        self._broker = broker
        self._port = port
        log.info("embedded MQTT broker on %s", self.url)

    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._broker is not None and bool(self._broker.is_running)

    async def stop(self) -> None:
        """Disconnect every client and stop listening (idempotent)."""
        broker, self._broker = self._broker, None
        self._port = None
        if broker is not None:
            await asyncio.to_thread(broker.stop)

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _check_free(host: str, port: int) -> None:
    """``OSError(EADDRINUSE)`` if something listens on ``host:port`` already."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise OSError(errno.EADDRINUSE, f"port {port} on {host} is taken") from None
            raise


class _Mosquitto:
    """A Mosquitto child process with a config of its own; it dies with this process."""

    def __init__(self, host: str, port: int) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="twinfleet-mosquitto-"))
        config = self._folder / "mosquitto.conf"
        user = f"user {_user()}\n" if os.geteuid() == 0 else ""
        config.write_text(
            f"{user}persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            f"listener {port} {host}\nallow_anonymous true\n"
            f"max_queued_messages 100000\nmax_inflight_messages {MAX_INFLIGHT}\n"
            f"message_size_limit {MAX_PACKET_BYTES}\n"
        )
        self._log = (self._folder / "mosquitto.log").open("ab")
        # setpriv (util-linux) has the kernel kill it when its parent dies: no broker
        # outlives a platform killed with SIGKILL (preexec_fn is unsafe in a threaded actor).
        setpriv = shutil.which("setpriv")
        guard = [setpriv, "--pdeathsig", "KILL"] if setpriv else []
        self._process = subprocess.Popen(
            [*guard, "mosquitto", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        deadline = time.monotonic() + 10
        while not _listening(host, port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                detail = (self._folder / "mosquitto.log").read_text(errors="replace")
                raise RuntimeError(f"mosquitto did not start: {detail.strip()}")
            time.sleep(0.02)

    @property
    def is_running(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        self._log.close()
        shutil.rmtree(self._folder, ignore_errors=True)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        return sock.connect_ex((host, port)) == 0


def _start_rumqttd(host: str, port: int) -> Broker:
    from iotcore import Broker

    broker = Broker(
        port=port,
        listen=host,
        max_payload_size=MAX_PACKET_BYTES,
        max_inflight_count=MAX_INFLIGHT,
    )
    try:
        broker.start()
    except OSError as err:  # iotcore says "Address already in use" without an errno
        if err.errno is None and "in use" in str(err):
            raise OSError(errno.EADDRINUSE, f"port {port} on {host} is taken") from err
        raise
    return broker


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
