"""API latency under a steady 500 req/s, with 100,000 twins and telemetry flowing.

``twinfleet``'s API (uvicorn, in the driver process as ``twinfleet up`` runs it) in front of a
runtime with two hosts; a feeder Ray actor (where gateways run) ingests simulated telemetry
meanwhile. A separate load process sends GET /twins/{id}, then PATCH desired, at a fixed rate
and reports latency percentiles. Baselines in the same run: GET /healthz, which touches no twin
(the HTTP stack's floor), and GET /twins/{id} through an API making one Ray actor call per
request (``create_app(direct=False)``, the path before direct host connections).

    .venv/bin/python bench/api_latency.py [--twins 100000] [--rate 500] [--seconds 20]
        [--store sqlite|redis]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import ray
import uvicorn
from common import report, start_ray

from twinfleet import Runtime
from twinfleet.api.app import create_app
from twinfleet.api.auth import TokenStore
from twinfleet.runtime import DeviceMessage, RuntimeSettings
from twinfleet.runtime.directory import HostRoster, HostRouting
from twinfleet.runtime.stores import open_store

LOAD = Path(__file__).with_name("api_load.py")


@ray.remote(num_cpus=0)
class TelemetryFeeder:
    """Ingests ``rate`` telemetry messages/s over ``twins`` twins, as a gateway actor would."""

    def __init__(self, view: HostRoster, twins: int, rate: float) -> None:
        self._client = HostRouting(view)
        self._ids = [f"api-{i:06d}" for i in range(twins)]
        self._rate = rate
        self._stop = threading.Event()
        self._sent = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        k = 0
        ids = self._ids
        while not self._stop.wait(0.05):
            n = int(self._rate / 20)
            now = time.time()
            self._client.ingest(
                [
                    DeviceMessage(
                        ids[(k + j) % len(ids)], "telemetry", {"temperature": 20.0 + j % 7}, now
                    )
                    for j in range(n)
                ]
            )
            k += n
            self._sent += n

    def stop(self) -> int:
        """Stop feeding; return how many messages were sent."""
        self._stop.set()
        self._client.flush()
        return self._sent


def serve(app: Any, port: int) -> uvicorn.Server:
    """Run ``app`` with uvicorn in a thread of this process; return once it listens."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


def load(port: int, token: str, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run the load process against the API on ``port``; its figures."""
    out = subprocess.run(
        [
            sys.executable,
            str(LOAD),
            "--url",
            f"http://127.0.0.1:{port}",
            "--token",
            token,
            "--kind",
            kind,
            "--rate",
            str(args.rate),
            "--seconds",
            str(args.seconds),
            "--twins",
            str(args.twins),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    print(kind, port, figures, flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--twins", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--telemetry-rate", type=float, default=5000)
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/8")
    args = parser.parse_args()
    start_ray()
    with tempfile.TemporaryDirectory() as tmp:
        if args.store == "redis":
            url = f"{args.redis}?prefix=bench-{uuid.uuid4().hex[:8]}"
        else:
            url = f"sqlite:///{tmp}/state.db"
        runtime = Runtime(store=url, settings=RuntimeSettings(hosts=2))
        ids = [f"api-{i:06d}" for i in range(args.twins)]
        runtime.ingest(
            DeviceMessage(i, "telemetry", {"temperature": 20.0}, None, "bench", "smart-sensor")
            for i in ids
        )
        runtime.persist()
        store = open_store(url)
        tokens = TokenStore(store)
        _, token = tokens.create("admin")
        direct = serve(create_app(runtime, tokens, rate_limit=None, freeze_heap=True), args.port)
        via_ray = serve(
            create_app(runtime, tokens, direct=False, rate_limit=None, freeze_heap=True),
            args.port + 1,
        )
        feeder = TelemetryFeeder.remote(runtime.roster(), args.twins, args.telemetry_rate)
        time.sleep(3)  # telemetry flowing, hosts' first sweep done
        results = {
            "health": load(args.port, token, "health", args),
            "get": load(args.port, token, "get", args),
            "patch": load(args.port, token, "patch", args),
            "get_via_ray": load(args.port + 1, token, "get", args),
        }
        sent = ray.get(feeder.stop.remote())
        applied = sum(h["applied"] for h in runtime.stats()["hosts"])
        direct.should_exit = via_ray.should_exit = True
        runtime.close()
        if args.store == "redis":
            store.clear()
        store.close()
    report(
        "api_latency",
        {
            "command": "python bench/api_latency.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
            "twins": args.twins,
            "store": args.store,
            "rate": args.rate,
            "telemetry_rate_offered": args.telemetry_rate,
            "telemetry_sent": sent,
            "telemetry_applied_total": applied,
            "healthz_baseline": results["health"],
            "get_twin_via_ray_baseline": results["get_via_ray"],
            "get_twin": results["get"],
            "patch_desired": results["patch"],
            "ratio_get_p99_over_healthz_p99": round(
                results["get"]["p99_ms"] / max(results["health"]["p99_ms"], 0.01), 2
            ),
            "ratio_get_p99_over_via_ray_p99": round(
                results["get"]["p99_ms"] / max(results["get_via_ray"]["p99_ms"], 0.01), 4
            ),
            "targets": {"get_p99_ms": 10, "patch_p99_ms": 30},
        },
    )


if __name__ == "__main__":
    main()
