"""The host is plain Python: importing it (every part) loads no Ray, web stack or broker."""

from __future__ import annotations

import subprocess
import sys

# The state stores and history sinks it is given may load their clients (redis, influx).
PLATFORM = {"aiocoap", "aiomqtt", "iotcore", "fastapi", "paho", "ray", "starlette", "uvicorn"}


def test_the_host_and_its_parts_load_no_ray() -> None:
    code = (
        "import sys\n"
        "import twinfleet.runtime.host\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(result.stdout.split())
    assert "twinfleet" in loaded
    assert loaded & PLATFORM == set()
