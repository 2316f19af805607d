"""The layers hold: importing a layer pulls in nothing from the layers above it.

Each check runs in a fresh interpreter (a subprocess), so what the test process itself has
loaded does not hide an import.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

# What a pure layer must not load: Ray, the web stack, brokers, network and storage clients.
PLATFORM = {
    "aiocoap",
    "aiomqtt",
    "iotcore",
    "fastapi",
    "influxdb_client",
    "paho",
    "ray",
    "redis",
    "starlette",
    "uvicorn",
}
NETWORK = PLATFORM | {"httpx", "requests"}


def loaded_by(*modules: str) -> set[str]:
    """Top-level packages in ``sys.modules`` after importing ``modules`` in a new interpreter."""
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(result.stdout.split())


def test_twins_and_models_import_no_ray_web_or_network_library() -> None:
    loaded = loaded_by("twinfleet.twins", "twinfleet.models")
    assert loaded & NETWORK == set()
    assert "twinfleet" in loaded


@pytest.mark.parametrize(
    "module",
    [
        "twinfleet.errors",
        "twinfleet.runtime",  # lazy: its names load on first use
        "twinfleet.runtime.messages",
        "twinfleet.runtime.events",
        "twinfleet.adapters.payloads",
        "twinfleet.adapters.simulator",  # the simulated devices' signal code
        "twinfleet.adapters.defaults",
    ],
)
def test_pure_modules_load_no_platform_or_network(module: str) -> None:
    assert loaded_by(module) & NETWORK == set()


@pytest.mark.parametrize(
    "module",
    [
        "twinfleet.client",  # the HTTP client: httpx, nothing of the platform
        "twinfleet.cli.commands",  # the CLI's HTTP-client commands
        "twinfleet.cli.cli",  # the whole CLI, before a command that runs the platform
    ],
)
def test_http_clients_load_no_ray_web_server_or_broker(module: str) -> None:
    assert loaded_by(module) & PLATFORM == set()


def test_errors_import_nothing_of_ours() -> None:
    loaded = loaded_by("twinfleet.errors")
    code = (
        "import sys, twinfleet.errors\n"
        "print(' '.join(m for m in sys.modules if m.startswith('twinfleet')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert set(result.stdout.split()) == {"twinfleet", "twinfleet.errors"}
    assert "numpy" not in loaded


def test_a_cli_command_that_talks_http_starts_without_the_platform() -> None:
    """`twinfleet twins list --help` runs the CLI as a user does (the console entry point)."""
    code = (
        "import sys\n"
        "from twinfleet.cli.cli import cli\n"
        "try:\n"
        "    cli(['twins', 'list', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('LOADED', ' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "--filter" in result.stdout  # the help was printed
    loaded = set(result.stdout.rsplit("LOADED", 1)[1].split())
    assert loaded & PLATFORM == set()
