"""``twinfleet up --simulate N`` as a new user runs it: lag, presence, readings applied, CPU.

For each N, the real command on its embedded defaults (embedded broker, SQLite store and
history, the default gateways) runs for ``--minutes`` in a fresh data directory, on free ports.
Its final ``--json`` summary gives, after the devices stopped and the edges drained:

- lag p99 per protocol since start, from the device's own timestamp to its twin applying the
  reading (publish-to-twin), and from the edge receiving it (receive-to-twin);
- offline transitions while the devices ran (every simulated device keeps reporting, so every
  one is false);
- what the devices had acknowledged against what the hosts took, per protocol: the ratio is
  the baseline of this benchmark (1.0 = every reading applied);
- CPU of the driver, each edge process and each host, as a share of one core.

    .venv/bin/python bench/up_simulate.py [--devices 1000,5000,10000] [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import report

TWINFLEET = Path(sys.executable).with_name("twinfleet")


def run(devices: int, minutes: float, extra: list[str]) -> dict[str, Any]:
    """One run of ``twinfleet up --simulate devices``; its final summary and wall time."""
    with tempfile.TemporaryDirectory(prefix="up-bench-") as data:
        started = time.monotonic()
        done = subprocess.run(
            [
                str(TWINFLEET),
                "up",
                "--simulate",
                str(devices),
                "--duration",
                str(minutes * 60),
                "--json",
                "--data-dir",
                data,
                "--port",
                "0",
                "--coap-port",
                "0",
                "--mqtt-port",
                "0",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=minutes * 60 + 600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"twinfleet up failed ({done.returncode}):\n{done.stderr[-3000:]}")
        summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        summary["wall_s"] = round(time.monotonic() - started, 1)
        return summary


def figures(devices: int, summary: dict[str, Any]) -> dict[str, Any]:
    """What the docs report of one run."""
    final = summary["final"]
    uptime = summary["uptime_s"]
    sent, took = final["devices_sent"], final["hosts_took"]
    return {
        "devices": devices,
        "minutes": round(uptime / 60, 1),
        "publish_to_twin_lag_p99_s": final["publish_lag_p99_s_since_start"],
        "receive_to_twin_lag_p99_s": final["lag_p99_s_since_start"],
        "false_offline_transitions": summary["offline_transitions"],
        "online_at_end": f"{summary['online']}/{summary['twins']}",
        "sent": sent,
        "unanswered_coap_readings": final.get("devices_unanswered", {}).get("coap", 0),
        "applied": took,
        "applied_vs_sent": {p: round(took.get(p, 0) / n, 4) for p, n in sent.items() if n},
        "drained": final["drained"],
        "cpu_share_of_a_core": {
            name: round(seconds / uptime, 3)
            for name, seconds in summary["cpu_s"].items()
            if seconds is not None
        },
        "edge_restarts": summary["edge_restarts"],
        "updates_per_s_at_end": summary["updates_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--devices", default="1000,5000,10000")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--name", default="up_simulate")
    parser.add_argument("extra", nargs="*", help="more twinfleet up options, after --")
    args = parser.parse_args()
    results = []
    for devices in (int(n) for n in args.devices.split(",")):
        results.append(figures(devices, run(devices, args.minutes, args.extra)))
        print(json.dumps(results[-1]), flush=True)
    report(args.name, {"command": " ".join(sys.argv), "runs": results})


if __name__ == "__main__":
    main()
