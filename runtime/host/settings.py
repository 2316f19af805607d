"""``HostSettings``: the timing and batching of one host."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HostSettings"]


@dataclass(frozen=True, slots=True)
class HostSettings:
    """Timing and batching of one host."""

    flush_interval_s: float = 1.0
    idle_timeout_s: float = 600.0
    sweep_interval_s: float = 5.0
    flush_batch: int = 100
    load_batch: int = 1000
    event_interval_s: float = 0.05
    order_timeout_s: float = 10.0
    history_retention_s: float | None = 7 * 86_400.0  # embedded history kept; None: forever
    retention_interval_s: float = 300.0

    def __post_init__(self) -> None:
        for name in (
            "flush_interval_s",
            "idle_timeout_s",
            "sweep_interval_s",
            "order_timeout_s",
            "event_interval_s",
            "retention_interval_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.flush_batch < 1 or self.load_batch < 1:
            raise ValueError("batch sizes must be at least 1")
        if self.history_retention_s is not None and self.history_retention_s <= 0:
            raise ValueError("history_retention_s must be positive (None: keep forever)")
