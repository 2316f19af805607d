"""``EmbeddedBroker``: an MQTT broker inside this process, for a platform with no services.

``twinfleet up`` without ``--mqtt`` runs one (amqtt, an asyncio broker). It speaks MQTT 3.1.1,
lets anonymous clients in and keeps retained messages in memory only. It has no shared
subscriptions (``$share/...`` filters match nothing there), so the gateway in front of it
subscribes plainly (``MqttSettings.shared = False``, which ``settings()`` sets) and there must
be one gateway only. Scale out with a real broker (Mosquitto, EMQX) instead.
"""

from __future__ import annotations

import logging
import socket
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .mqtt import MqttSettings

if TYPE_CHECKING:
    from amqtt.broker import Broker  # type: ignore[import-untyped]

__all__ = ["EmbeddedBroker"]

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """An amqtt broker on ``host:port`` (port 0 or None: a free one) for the ``async with``.

    ``url`` is ``mqtt://host:port`` once entered; ``settings()`` gives a gateway's settings
    for it.
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

    def settings(self, **options: Any) -> MqttSettings:
        """Gateway settings for this broker: plain (not shared) subscriptions."""
        return MqttSettings.from_url(self.url, **{"shared": False, **options})

    async def start(self) -> None:
        """Start listening (``async with`` calls this)."""
        from amqtt.broker import Broker

        if self._broker is not None:
            raise RuntimeError("the embedded broker is already running")
        config = {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{self.host}:{self._requested_port}"},
            },
            # Only anonymous access: amqtt's default packet logger and $SYS plugin cost time.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        broker = Broker(config)
        await broker.start()
        self._broker = broker
        self._port = self._bound_port(broker)
        log.info("embedded MQTT broker on %s", self.url)

    def _bound_port(self, broker: Broker) -> int:
        """The port the listener got (port 0 asks the OS for a free one)."""
        server = broker._servers["default"].instance  # amqtt does not expose it otherwise
        for sock in server.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        raise RuntimeError("the embedded broker has no TCP listener")

    async def stop(self) -> None:
        """Disconnect every client and stop listening (idempotent)."""
        broker, self._broker = self._broker, None
        self._port = None
        if broker is not None:
            await broker.shutdown()

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
