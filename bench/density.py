"""Memory density: RSS of the hosts holding 100,000 active twins, against dedicated actors.

Every twin holds realistic state (a family's metrics with timestamps and EWMA model state).
The figure is the hosts' RSS growth from empty to full; the baseline, measured in the same run,
is the RSS of one dedicated actor holding one twin.

    .venv/bin/python bench/density.py [--twins 100000] [--dedicated 8]
"""

from __future__ import annotations

import argparse
import gc
import tempfile

from common import fleet_messages, report, start_ray

from twinfleet import Runtime
from twinfleet.runtime import RuntimeSettings

MIB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--twins", type=int, default=100_000)
    parser.add_argument("--dedicated", type=int, default=8)
    parser.add_argument("--hosts", type=int, default=2)
    args = parser.parse_args()
    start_ray()
    rounds = fleet_messages(args.twins, 3)
    with tempfile.TemporaryDirectory() as tmp:
        with Runtime(
            store=f"sqlite:///{tmp}/v.db", settings=RuntimeSettings(hosts=args.hosts)
        ) as rt:
            empty = sum(h["rss_bytes"] for h in rt.stats()["hosts"])
            for messages in rounds:
                rt.ingest(messages)
            rt.persist()
            stats = rt.stats()
            assert stats["active"] == args.twins, stats["active"]
            full = sum(h["rss_bytes"] for h in stats["hosts"])
        del rounds
        gc.collect()
        settings = RuntimeSettings(hosts=1, default_placement="dedicated")
        with Runtime(store=f"sqlite:///{tmp}/d.db", settings=settings) as rt:
            for messages in fleet_messages(args.dedicated, 3):
                rt.ingest(messages)
            rt.persist()
            dedicated = rt.stats()["dedicated_hosts"]
    per_twin = (full - empty) / args.twins
    per_dedicated = sum(d["rss_bytes"] for d in dedicated) / len(dedicated)
    report(
        "density",
        {
            "command": "python bench/density.py "
            + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
            "twins": args.twins,
            "hosts": args.hosts,
            "hosts_rss_empty_mib": round(empty / MIB),
            "hosts_rss_full_mib": round(full / MIB),
            "rss_growth_mib": round((full - empty) / MIB),
            "bytes_per_virtual_twin": round(per_twin),
            "dedicated_actor_rss_mib": round(per_dedicated / MIB, 1),
            "ratio_dedicated_over_virtual_per_twin": round(per_dedicated / per_twin),
            "target_growth_mib": 2048,
        },
    )


if __name__ == "__main__":
    main()
