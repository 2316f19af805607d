"""Child program of the crash test: writes to twins until it is killed with SIGKILL.

It prints ``ACK <seq> <twin> <ts>`` after each acknowledged desired write; every line printed
is a promise the platform must keep after the crash.
"""

from __future__ import annotations

import sys
import time

from twinfleet import Runtime
from twinfleet.runtime import DeviceMessage, HostSettings, RuntimeSettings

TWINS = 20


def main(store_url: str) -> None:
    settings = RuntimeSettings(hosts=2, host=HostSettings(flush_interval_s=0.5))
    runtime = Runtime(
        store=store_url,
        settings=settings,
        ray_options={"num_cpus": 2, "object_store_memory": 100 * 1024 * 1024},
    )
    print("READY", flush=True)
    seq = 0
    while True:
        seq += 1
        now = time.time()
        runtime.ingest(
            DeviceMessage(f"c-{i}", "telemetry", {"seq": seq}, now, "test", "smart-sensor")
            for i in range(TWINS)
        )
        twin = f"c-{seq % TWINS}"
        runtime.twin(twin).patch_desired({"seq": seq})
        print(f"ACK {seq} {twin} {now}", flush=True)
        time.sleep(0.01)


if __name__ == "__main__":
    main(sys.argv[1])
