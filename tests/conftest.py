"""Shared fixtures: Ray once per session, a clean Redis namespace, temporary data dirs, the API."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import T0, PrivateMosquitto, Served, port_open, serving, telemetry

REDIS_HOST = os.environ.get("TWINFLEET_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("TWINFLEET_TEST_REDIS_PORT", "6379"))
REDIS_DB = int(os.environ.get("TWINFLEET_TEST_REDIS_DB", "9"))  # tests never touch db 0


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A ``redis://`` store URL with a key prefix of its own, deleted afterwards."""
    if not port_open(REDIS_HOST, REDIS_PORT):
        pytest.fail(
            f"Redis is not running on {REDIS_HOST}:{REDIS_PORT} (scripts/test.sh starts it)"
        )
    import redis

    prefix = f"tftest-{uuid.uuid4().hex[:10]}"
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}?prefix={prefix}"
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A ``sqlite://`` store URL in a temporary directory."""
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray, started once per test session (2 CPUs, a small object store)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            object_store_memory=200 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
            namespace=f"tftest-{uuid.uuid4().hex[:8]}",
        )
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def _ray_only_where_asked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests that do not ask for ``ray_session`` cannot start Ray, nor use one left running.

    (Ray Serve does the same for its controller's unit tests.) Subprocesses are not affected.
    """
    if "ray_session" in request.fixturenames or "ray" not in sys.modules:
        return
    ray = sys.modules["ray"]

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("this test must not use Ray: ask for the ray_session fixture")

    monkeypatch.setattr(ray, "init", forbidden)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)


@pytest.fixture
def no_ray() -> None:
    """Documents that a test runs without Ray (the autouse guard enforces it)."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The API over real HTTP on a real Ray runtime (2 hosts, SQLite), with five sensors."""
    from twinfleet import Runtime
    from twinfleet.api.app import create_app
    from twinfleet.api.auth import TokenStore
    from twinfleet.runtime import RuntimeSettings
    from twinfleet.runtime.stores import open_store
    from twinfleet.runtime.telemetry import open_telemetry

    path: Path = tmp_path_factory.mktemp("api")
    url = f"sqlite:///{path}/state.db"
    history = f"sqlite:///{path}/telemetry.db"
    runtime = Runtime(store=url, settings=RuntimeSettings(hosts=2, telemetry=history))
    tokens = TokenStore(open_store(url))
    app = create_app(runtime, tokens, telemetry=open_telemetry(history), rate_limit="100000/minute")
    with serving(app) as base_url:
        runtime.ingest(telemetry(f"api-{i}", T0, "test", temperature=20.0 + i) for i in range(5))
        runtime.flush()
        try:
            yield Served(runtime, tokens, base_url, open_telemetry(history))
        finally:
            runtime.close()


@pytest.fixture
def private_mosquitto(tmp_path: Path) -> Iterator[Callable[[str], PrivateMosquitto]]:
    brokers: list[PrivateMosquitto] = []

    def make(listeners: str) -> PrivateMosquitto:
        folder = tmp_path / f"mosquitto-{len(brokers)}"
        folder.mkdir()
        broker = PrivateMosquitto(folder, listeners)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()
