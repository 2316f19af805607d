"""Ingest throughput through ``Runtime.ingest`` with the EWMA model on every twin.

Virtual twins on shard hosts against the baseline measured in the same run: the same messages
for as many twins as fit in dedicated actors (one Ray actor per twin).

    .venv/bin/python bench/ingest.py [--twins 100000] [--dedicated 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import ray
from common import fleet_messages, report, start_ray

from twinfleet import Runtime
from twinfleet.runtime import DeviceMessage, RouterSettings, RuntimeSettings


def measure(runtime: Runtime, rounds: list[list[DeviceMessage]]) -> float:
    """Messages per second applied, after one warm-up round that activates every twin."""
    runtime.ingest(rounds[0])
    runtime.flush()
    count = sum(len(r) for r in rounds[1:])
    start = time.perf_counter()
    for messages in rounds[1:]:
        runtime.ingest(messages)
    runtime.flush()
    elapsed = time.perf_counter() - start
    applied = runtime.stats()["applied"]
    assert applied == count + len(rounds[0]), f"applied {applied} of {count + len(rounds[0])}"
    return count / elapsed


@ray.remote
class _Echo:
    async def call(self, payload: bytes) -> int:
        return len(payload)


def raw_ray_calls_per_s(actors: int, calls: int = 10_000) -> float:
    """Ray's own ceiling for the baseline: pipelined empty calls spread over ``actors``."""
    handles = [_Echo.options(max_concurrency=1000).remote() for _ in range(actors)]
    ray.get([h.call.remote(b"") for h in handles])
    payload = b"x" * 200  # about one pickled telemetry message
    start = time.perf_counter()
    pending: list[ray.ObjectRef[int]] = []
    for i in range(calls):
        pending.append(handles[i % actors].call.remote(payload))
        if len(pending) >= 256:
            ray.get(pending[:128])
            pending = pending[128:]
    ray.get(pending)
    elapsed = time.perf_counter() - start
    for handle in handles:
        ray.kill(handle)
    return calls / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--twins", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--dedicated", type=int, default=40)
    parser.add_argument("--hosts", type=int, default=2)
    args = parser.parse_args()
    start_ray()
    rounds = fleet_messages(args.twins, 1 + max(1, args.messages // args.twins))
    with tempfile.TemporaryDirectory() as tmp:
        settings = RuntimeSettings(hosts=args.hosts)
        with Runtime(store=f"sqlite:///{tmp}/virtual.db", settings=settings) as rt:
            virtual = measure(rt, rounds)
        # Baseline: one Ray actor per twin, as many as fit, one Ray call per message: a device
        # sends a message every few seconds, so an actor of its own never has a batch to take.
        base_rounds = fleet_messages(args.dedicated, 1 + 20_000 // args.dedicated)
        dedicated_settings = RuntimeSettings(
            hosts=1,
            default_placement="dedicated",
            router=RouterSettings(max_batch=1, max_in_flight=32),
        )
        with Runtime(store=f"sqlite:///{tmp}/dedicated.db", settings=dedicated_settings) as rt:
            dedicated = measure(rt, base_rounds)
        # For reference: dedicated actors fed in batches, as if each device sent bursts.
        batched_settings = RuntimeSettings(hosts=1, default_placement="dedicated")
        with Runtime(store=f"sqlite:///{tmp}/batched.db", settings=batched_settings) as rt:
            dedicated_batched = measure(rt, base_rounds)
    ray_ceiling = raw_ray_calls_per_s(args.dedicated)
    report(
        "ingest",
        {
            "command": "python bench/ingest.py "
            + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
            "virtual_twins": args.twins,
            "virtual_hosts": args.hosts,
            "virtual_msgs_per_s": round(virtual),
            "dedicated_twins": args.dedicated,
            "dedicated_msgs_per_s": round(dedicated),
            "ratio_virtual_over_dedicated": round(virtual / dedicated, 1),
            "dedicated_batched_msgs_per_s": round(dedicated_batched),
            "raw_ray_calls_per_s_same_actor_count": round(ray_ceiling),
            "target_msgs_per_s": 50_000,
            "target_ratio": 25,
        },
    )


if __name__ == "__main__":
    main()
