"""Shared fixtures of the API tests: the API over real HTTP on a real Ray runtime."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from twinfleet import Runtime
from twinfleet.api.app import create_app
from twinfleet.api.auth import TokenStore
from twinfleet.runtime import DeviceMessage, RuntimeSettings
from twinfleet.runtime.stores import open_store
from twinfleet.runtime.telemetry import TelemetrySink, open_telemetry

T0 = 1_800_000_000.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """The API on a free port, its runtime, and tokens of every role."""

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
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextlib.contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port in a thread; yields its base URL."""
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


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    path: Path = tmp_path_factory.mktemp("api")
    url = f"sqlite:///{path}/state.db"
    history = f"sqlite:///{path}/telemetry.db"
    runtime = Runtime(store=url, settings=RuntimeSettings(hosts=2, telemetry=history))
    tokens = TokenStore(open_store(url))
    app = create_app(runtime, tokens, telemetry=open_telemetry(history), rate_limit="100000/minute")
    with serving(app) as base_url:
        runtime.ingest(
            DeviceMessage(
                f"api-{i}", "telemetry", {"temperature": 20.0 + i}, T0, "test", "smart-sensor"
            )
            for i in range(5)
        )
        runtime.flush()
        try:
            yield Served(runtime, tokens, base_url, open_telemetry(history))
        finally:
            runtime.close()
