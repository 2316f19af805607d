"""Activation of 100,000 twins from Redis: how long until every twin is in memory again.

The store is filled by a runtime that ingests a simulated fleet and shuts down. A new runtime
on the same Redis then activates every twin. The baseline, measured in the same run, is the
raw cost of the same data: one process reading every snapshot with MGET and decoding it.

    .venv/bin/python bench/activation.py [--twins 100000] [--redis redis://127.0.0.1:6379/8]
"""

from __future__ import annotations

import argparse
import time
import uuid

from common import fleet_messages, report, start_ray

from twinfleet import Runtime
from twinfleet.runtime import RuntimeSettings
from twinfleet.runtime.stores import open_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--twins", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/8")
    args = parser.parse_args()
    url = f"{args.redis}?prefix=bench-{uuid.uuid4().hex[:8]}"
    start_ray()
    rounds = fleet_messages(args.twins, 3)
    ids = [m.device_id for m in rounds[0]]
    settings = RuntimeSettings(hosts=args.hosts)
    store = open_store(url)
    try:
        with Runtime(store=url, settings=settings) as rt:
            for messages in rounds:
                rt.ingest(messages)
        del rounds
        assert store.count() == args.twins

        start = time.perf_counter()
        loaded = 0
        for i in range(0, len(ids), 1000):
            loaded += len(store.load_many(ids[i : i + 1000]))
        raw = time.perf_counter() - start
        assert loaded == args.twins

        with Runtime(store=url, settings=settings) as rt:
            assert rt.stats()["active"] == 0
            start = time.perf_counter()
            active = rt.activate(ids)
            activation = time.perf_counter() - start
            assert active == args.twins == rt.stats()["active"]
    finally:
        store.clear()
        store.close()
    report(
        "activation",
        {
            "command": "python bench/activation.py "
            + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
            "twins": args.twins,
            "hosts": args.hosts,
            "activation_s": round(activation, 2),
            "raw_read_and_decode_s": round(raw, 2),
            "ratio_activation_over_raw_read": round(activation / raw, 2),
            "target_s": 10,
        },
    )


if __name__ == "__main__":
    main()
