"""A small ingest through ``Runtime`` for back-to-back comparisons of two trees.

30,000 twins created by a first message each, then 270,000 messages through
``Runtime.ingest`` and one ``flush``, timed: ``cd bench && ../.venv/bin/python ingest_small.py
LABEL`` (run it in each tree, alternating).
"""

from __future__ import annotations

import sys
import tempfile
import time

from twinfleet import Runtime
from twinfleet.runtime import DeviceMessage, RuntimeSettings

N, TWINS = 300_000, 30_000


def main() -> None:
    """Time the ingest and print msgs/s and the load average."""
    label = sys.argv[1] if len(sys.argv) > 1 else "this tree"
    path = tempfile.mkdtemp()
    msgs = [
        DeviceMessage(
            f"t-{i % TWINS}",
            "telemetry",
            {"temperature": 20.0 + (i % 7)},
            1.7e9 + i,
            "mqtt",
            "smart-sensor",
        )
        for i in range(N)
    ]
    settings = RuntimeSettings(hosts=2)
    with Runtime(store=f"sqlite:///{path}/s.db", settings=settings) as rt:
        rt.ingest(msgs[:TWINS])
        rt.flush()
        start = time.perf_counter()
        rt.ingest(msgs[TWINS:])
        rt.flush()
        elapsed = time.perf_counter() - start
    with open("/proc/loadavg") as loadavg:
        load = loadavg.read().split()[0]
    print(label, f"{(N - TWINS) / elapsed:,.0f} msgs/s", "load", load)


if __name__ == "__main__":
    main()
