"""What ``twinfleet up`` is asked to run, as plain data (no platform code loads with it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EdgeOptions", "UpOptions"]


@dataclass(frozen=True, slots=True)
class EdgeOptions:
    """Where the edges listen and what they simulate."""

    host: str = "127.0.0.1"
    mqtt: str | None = None  # None: an embedded broker
    mqtt_port: int = 1883  # the embedded broker's port (a free one if taken)
    broker: str = "auto"  # the embedded broker: auto (Mosquitto if installed), mosquitto, rumqttd
    mqtt_ca: str | None = None
    mqtt_cert: str | None = None
    mqtt_key: str | None = None
    gateways: int | None = None  # MQTT gateways; None: one per core, at most 4
    coap_port: int = 5683
    port: int = 8000  # the HTTP API
    rate_limit: str | None = "3000/minute"  # API requests per token; None: unlimited
    simulate: int = 0
    interval_s: float | None = None
    seed: int = 0
    coap_share: float = 0.2  # of simulated devices, the part that speaks CoAP

    def __post_init__(self) -> None:
        if not all(0 <= p <= 65535 for p in (self.coap_port, self.mqtt_port, self.port)):
            raise ValueError("ports lie between 0 and 65535")
        if self.gateways is not None and self.gateways < 1:
            raise ValueError("--gateways must be at least 1")
        if self.simulate < 0:
            raise ValueError("simulate a number of devices, 0 or more")
        if not 0.0 <= self.coap_share <= 1.0:
            raise ValueError("coap_share is a fraction")


@dataclass(frozen=True, slots=True)
class UpOptions:
    """What ``twinfleet up`` was asked to run."""

    data_dir: Path
    store: str | None = None
    tsdb: str | None = None
    ray_address: str | None = None
    hosts: int = 2
    retention_days: float | None = 7.0  # embedded history kept; None: forever
    duration_s: float | None = None
    edges: EdgeOptions = field(default_factory=EdgeOptions)

    def __post_init__(self) -> None:
        if self.hosts < 1:
            raise ValueError("--hosts must be at least 1")
        if self.retention_days is not None and self.retention_days <= 0:
            raise ValueError("--retention must be positive days, or 'forever'")

    @property
    def store_url(self) -> str:
        """The store URL, defaulting to SQLite in the data directory."""
        return self.store or f"sqlite:///{self.data_dir.resolve() / 'state.db'}"

    @property
    def tsdb_url(self) -> str:
        """The telemetry history URL, defaulting to SQLite in the data directory."""
        return self.tsdb or f"sqlite:///{self.data_dir.resolve() / 'telemetry.db'}"
