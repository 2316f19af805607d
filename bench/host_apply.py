"""``TwinHost.apply_packed`` in one process (no Ray): the host's hot path alone.

20,000 twins, 200,000 messages in router-numbered batches of 1,000:
``cd bench && ../.venv/bin/python host_apply.py LABEL``.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import time

from twinfleet.runtime import DeviceMessage, TwinHost
from twinfleet.runtime.stores import MemoryStore

N, TWINS, BATCH = 200_000, 20_000, 1000


async def main() -> None:
    """Apply the batches in order and print msgs/s."""
    label = sys.argv[1] if len(sys.argv) > 1 else "this tree"
    host = TwinHost("h", MemoryStore())
    msgs = [
        DeviceMessage(
            f"t-{i % TWINS}",
            "telemetry",
            {"temperature": 20.0 + (i % 7), "humidity": 40.0},
            1.7e9 + i,
            "mqtt",
            "smart-sensor",
        )
        for i in range(N)
    ]
    blobs = [pickle.dumps([tuple(m) for m in msgs[j : j + BATCH]]) for j in range(0, N, BATCH)]
    await host.apply_packed(blobs[0], sender="s", seq=0, first=0)
    start = time.perf_counter()
    for seq, blob in enumerate(blobs[1:], 1):
        await host.apply_packed(blob, sender="s", seq=seq, first=seq)
    print(label, f"{(N - BATCH) / (time.perf_counter() - start):,.0f} msgs/s")


if __name__ == "__main__":
    asyncio.run(main())
