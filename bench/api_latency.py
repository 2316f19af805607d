"""API latency under a steady 500 req/s, with 100,000 twins and telemetry flowing.

``twinfleet``'s API (uvicorn, one process) in front of a runtime with two hosts; a feeder thread
ingests simulated telemetry meanwhile. A separate load process sends GET /twins/{id} (then
PATCH desired) at a fixed rate and reports latency percentiles. Baseline in the same run: the
same load on GET /healthz, which touches no twin (the HTTP stack's own floor).

    .venv/bin/python bench/api_latency.py [--twins 100000] [--rate 500] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from common import report, start_ray

from twinfleet import Runtime
from twinfleet.api.app import create_app
from twinfleet.api.auth import TokenStore
from twinfleet.runtime import DeviceMessage, RuntimeSettings
from twinfleet.runtime.stores import open_store

LOAD = Path(__file__).with_name("api_load.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--twins", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--telemetry-rate", type=float, default=5000)
    parser.add_argument("--port", type=int, default=18000)
    args = parser.parse_args()
    start_ray()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/state.db"
        runtime = Runtime(store=url, settings=RuntimeSettings(hosts=2))
        ids = [f"api-{i:06d}" for i in range(args.twins)]
        runtime.ingest(
            DeviceMessage(i, "telemetry", {"temperature": 20.0}, None, "bench", "smart-sensor")
            for i in ids
        )
        runtime.persist()
        tokens = TokenStore(open_store(url))
        _, token = tokens.create("admin")
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(runtime, tokens), host="127.0.0.1", port=args.port, log_level="warning"
            )
        )
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        stop = threading.Event()

        def feed() -> None:  # telemetry keeps flowing while the API is measured
            k = 0
            while not stop.wait(0.1):
                n = int(args.telemetry_rate / 10)
                runtime.ingest(
                    DeviceMessage(
                        ids[(k + j) % len(ids)],
                        "telemetry",
                        {"temperature": 20.0 + (j % 7)},
                        time.time(),
                    )
                    for j in range(n)
                )
                k += n

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        results = {}
        for kind in ("health", "get", "patch"):
            out = subprocess.run(
                [
                    sys.executable,
                    str(LOAD),
                    "--url",
                    f"http://127.0.0.1:{args.port}",
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
                timeout=600,
            )
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
            print(kind, results[kind], flush=True)
        stop.set()
        feeder.join(5)
        applied = sum(h["applied"] for h in runtime.stats()["hosts"])
        server.should_exit = True
        runtime.close()
    report(
        "api_latency",
        {
            "command": "python bench/api_latency.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
            "twins": args.twins,
            "rate": args.rate,
            "telemetry_rate_offered": args.telemetry_rate,
            "telemetry_applied_total": applied,
            "healthz_baseline": results["health"],
            "get_twin": results["get"],
            "patch_desired": results["patch"],
            "ratio_get_p99_over_baseline_p99": round(
                results["get"]["p99_ms"] / max(results["health"]["p99_ms"], 0.01), 1
            ),
            "targets": {"get_p99_ms": 10, "patch_p99_ms": 30},
        },
    )


if __name__ == "__main__":
    main()
