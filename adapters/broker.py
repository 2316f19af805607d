"""``EmbeddedBroker``: an MQTT broker for a platform with no services.

``twinfleet up`` without ``--mqtt`` runs one. It is rumqttd (a Rust broker) as packaged by
``iotcore``, which installs from PyPI with nothing else and runs the broker in a child process
of its own (which exits with its parent). Chosen by measurement against amqtt and Mosquitto
(``bench/brokers.py``, docs/benchmarks.md): 3.3x amqtt's throughput at a twelfth of its CPU per
message, and the contract devices and gateways rely on: QoS 1 both ways, retained messages,
last wills, shared subscriptions (``$share/{group}/...``: several gateways split the device
traffic), persistent sessions that get again what they had not acknowledged. It keeps
sessions and retained messages in memory only. Payloads up to 128 KB (the platform's limit)
pass; rumqttd's default would stop at 20 KB.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from twinfleet.twins import MAX_PAYLOAD_BYTES

from .mqtt import MqttSettings

if TYPE_CHECKING:
    from iotcore import Broker

__all__ = ["EmbeddedBroker"]

log = logging.getLogger(__name__)

#: The largest MQTT packet the broker takes: a device payload at the platform's limit, with
#: room for its topic.
MAX_PACKET_BYTES: Final = MAX_PAYLOAD_BYTES + 4096
#: Unacknowledged QoS 1 messages in flight per connection (rumqttd's default is 100): a
#: gateway acknowledges in batches, once its twins applied them.
MAX_INFLIGHT: Final = 10_000


class EmbeddedBroker:
    """An embedded broker on ``host:port`` (port 0 or None: a free one) for the ``async with``.

    ``url`` is ``mqtt://host:port`` once entered; ``settings()`` gives a gateway's settings
    for it. ``start`` raises ``OSError`` (``EADDRINUSE``) when the port is taken.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        if port is not None and not 0 <= port <= 65535:
            raise ValueError(f"port must lie between 0 and 65535, not {port}")
        self.host = host
        self._requested_port = port or 0
        self._port: int | None = None
        self._broker: Broker | None = None

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
        broker = await asyncio.to_thread(_start, self.host, port)
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


def _start(host: str, port: int) -> Broker:
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
