"""Steady-rate HTTP load for the API benchmark (run as a process of its own).

Sends requests at a fixed rate (open loop: a slow answer does not slow the sender), records
each latency, prints percentiles as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import httpx


async def run(args: argparse.Namespace) -> dict[str, float | int]:
    headers = {"Authorization": f"Bearer {args.token}"}
    latencies: list[float] = []
    errors = 0
    rng = random.Random(3)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=args.url, headers=headers, limits=limits, timeout=10
    ) as client:

        async def one(i: int) -> None:
            nonlocal errors
            twin = args.id_format.format(rng.randrange(args.twins))
            start = time.perf_counter()
            if args.kind == "get":
                response = await client.get(f"/api/v1/twins/{twin}")
            elif args.kind == "patch":
                response = await client.patch(
                    f"/api/v1/twins/{twin}/desired",
                    content=json.dumps({"config": {"sample_interval": 1 + i % 30}}),
                    headers={"Content-Type": "application/merge-patch+json"},
                )
            else:
                response = await client.get("/healthz")
            latencies.append(time.perf_counter() - start)
            if response.status_code >= 400:
                errors += 1

        tasks = []
        start = time.perf_counter()
        for i in range(int(args.rate * args.seconds)):
            due = start + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)

    return {
        "requests": len(latencies),
        "errors": errors,
        "achieved_rate": round(len(latencies) / elapsed),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--kind", choices=("get", "patch", "health"), default="get")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--twins", type=int, default=100_000)
    parser.add_argument("--id-format", default="api-{:06d}")
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
