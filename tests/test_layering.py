"""The pure layers stay pure: importing them pulls in no Ray, web or network library."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = {
    "aiocoap",
    "aiomqtt",
    "amqtt",
    "fastapi",
    "httpx",
    "influxdb_client",
    "paho",
    "ray",
    "redis",
    "requests",
    "starlette",
    "uvicorn",
}


def test_twins_and_models_import_no_ray_web_or_network_library() -> None:
    code = (
        "import sys, twinfleet.twins, twinfleet.models\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert set(result.stdout.split()) & FORBIDDEN == set()
    assert "twinfleet" in result.stdout.split()
