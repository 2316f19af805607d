"""Where devices and edges meet by default (plain constants: the CLI reads them at start-up)."""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_COAP_URL", "DEFAULT_MQTT_URL"]

DEFAULT_MQTT_URL: Final = "mqtt://127.0.0.1:1883"
DEFAULT_COAP_URL: Final = "coap://127.0.0.1:5683"
