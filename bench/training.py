"""Ingest throughput while models train beside the hosts, against the same ingest without.

A fleet of simulated devices (five families) streams through ``Runtime.ingest`` with the
embedded SQLite history on; the runtime alternates stretches without training and stretches
during which training jobs run back to back (each fits a model on a family's history as a Ray
task, then swaps it into that family's twins). Both are measured in the same run, in turns
(without, with, without, with, ...), so that drift on the machine falls on both alike. A
stretch with training lasts exactly one job, from its start until its twins have switched.

    .venv/bin/python bench/training.py [--twins 20000] [--rounds 10] [--turns 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

from common import fleet_messages, report, start_ray

from twinfleet import Runtime
from twinfleet.runtime import DeviceMessage, RuntimeSettings


class Stream:
    """Rounds of readings from a pool, cycled, each round stamped one interval later."""

    def __init__(self, pool: list[list[DeviceMessage]], *, interval: float = 10.0) -> None:
        self._pool, self._interval = pool, interval
        self._next = 0
        self._ts = pool[-1][0].ts

    def take(self) -> list[DeviceMessage]:
        """The next round."""
        messages = self._pool[self._next % len(self._pool)]
        self._next += 1
        self._ts += self._interval
        return [m._replace(ts=self._ts) for m in messages]


def ingest_rate(runtime: Runtime, stream: Stream, *, rounds: int = 0, job: str = "") -> float:
    """Messages per second applied: ``rounds`` rounds, or as many as training ``job`` lasts."""
    count = done = 0
    start = time.perf_counter()
    while (done < rounds) if rounds else runtime.training(job)["status"] == "running":
        messages = stream.take()
        runtime.ingest(messages)
        count += len(messages)
        done += 1
    runtime.flush()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--twins", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=30, help="rounds of history first")
    parser.add_argument("--rounds", type=int, default=40, help="rounds measured without")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--family", default="industrial-controller")
    parser.add_argument("--model", default="sklearn")
    parser.add_argument("--max-twins", type=int, default=1_000)
    parser.add_argument(
        "--history-sink",
        choices=("sqlite", "memory"),
        default="sqlite",
        help="where hosts keep history",
    )
    args = parser.parse_args()
    start_ray()
    history = fleet_messages(args.twins, args.history)
    stream = Stream(history)
    request = {"family": args.family, "model": args.model, "max_twins": args.max_twins}
    without: list[float] = []
    with_training: list[float] = []
    jobs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        sink = f"sqlite:///{tmp}/telemetry.db" if args.history_sink == "sqlite" else "memory://"
        settings = RuntimeSettings(hosts=2, telemetry=sink)
        with Runtime(store=f"sqlite:///{tmp}/state.db", settings=settings) as rt:
            for messages in history:
                rt.ingest(messages)
            rt.flush()
            first = rt.train(**request, wait=True)  # warm: imports, artifacts, the code path
            assert first["status"] == "succeeded", first
            for _ in range(args.turns):
                without.append(ingest_rate(rt, stream, rounds=args.rounds))
                job = rt.train(**request)  # runs beside: ingest goes on until it is done
                with_training.append(ingest_rate(rt, stream, job=job["id"]))
                jobs.append(rt.training(job["id"]))
            stats = rt.stats()
            applied = stats["applied"]
    failed = [j for j in jobs if j["status"] != "succeeded"]
    base, busy = statistics.median(without), statistics.median(with_training)
    report(
        "training",
        {
            "command": "python bench/training.py "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
            "twins": args.twins,
            "messages_applied": applied,
            "history_points_written": sum(h["history_points"] for h in stats["hosts"]),
            "history_points_dropped": sum(h["history_dropped"] for h in stats["hosts"]),
            "ingest_msgs_per_s_without_training": [round(x) for x in without],
            "ingest_msgs_per_s_with_training": [round(x) for x in with_training],
            "median_without": round(base),
            "median_with": round(busy),
            "ratio_with_over_without": round(busy / base, 3),
            "target_ratio": 0.8,
            "training_jobs": len(jobs),
            "training_jobs_failed": len(failed),
            "training_seconds": [j["seconds"] for j in jobs],
            "history_seconds": [j.get("history_seconds") for j in jobs],
            "fit_seconds": [j.get("fit_seconds") for j in jobs],
            "readings_per_job": jobs[0]["readings"] if jobs else None,
            "twins_per_job": jobs[0]["twins_trained"] if jobs else None,
        },
    )


if __name__ == "__main__":
    main()
