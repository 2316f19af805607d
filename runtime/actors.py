"""The Ray shell around ``TwinHost``: the only module that applies ``ray.remote`` to it."""

from __future__ import annotations

from typing import Any

import ray

from .host import HostSettings, TwinHost
from .stores import open_store

__all__ = ["spawn_host"]


class _RemoteTwinHost(TwinHost):
    """A ``TwinHost`` that opens its own store from a URL inside the actor process."""

    def __init__(self, host_id: str, store_url: str, settings: HostSettings) -> None:
        super().__init__(host_id, open_store(store_url), settings=settings)


_TwinHostActor = ray.remote(_RemoteTwinHost)


def spawn_host(
    host_id: str,
    *,
    store_url: str,
    settings: HostSettings,
    name: str | None = None,
    num_cpus: float = 0,
) -> Any:
    """Start a ``TwinHost`` Ray actor (restarted by Ray if its process dies)."""
    return _TwinHostActor.options(
        name=name,
        num_cpus=num_cpus,
        max_restarts=-1,
        max_task_retries=3,
        max_concurrency=1000,
    ).remote(host_id, store_url, settings)
