"""Steady-rate HTTP load for the API benchmark (run as a process of its own).

Open loop: request i is due at ``start + i / rate`` whatever earlier answers did; each of a
pool of threads keeps one HTTP/1.1 connection (``http.client``) and takes the next due
request. Latency counts from the moment a request was due, so a queue in front of the server
shows up in the figures instead of hiding (no coordinated omission). The first ``--warmup``
seconds of load are sent but not counted (connections opening, first calls to each host).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import threading
import time
from urllib.parse import urlsplit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--kind", choices=("get", "patch", "health"), default="get")
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--twins", type=int, default=100_000)
    parser.add_argument("--id-format", default="api-{:06d}")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of load first, not counted"
    )
    args = parser.parse_args()
    target = urlsplit(args.url)
    skipped = int(args.rate * args.warmup)  # connections opened, caches warm
    total = skipped + int(args.rate * args.seconds)
    latencies: list[float] = []
    errors = 0
    next_index = 0
    lock = threading.Lock()
    start = time.perf_counter() + 0.5
    rng = random.Random(3)
    headers = {"Authorization": f"Bearer {args.token}"}

    def request(conn: http.client.HTTPConnection, i: int) -> int:
        twin = args.id_format.format(rng.randrange(args.twins))
        if args.kind == "get":
            conn.request("GET", f"/api/v1/twins/{twin}", headers=headers)
        elif args.kind == "patch":
            body = json.dumps({"config": {"sample_interval": 1 + i % 30}})
            conn.request(
                "PATCH",
                f"/api/v1/twins/{twin}/desired",
                body=body,
                headers={**headers, "Content-Type": "application/merge-patch+json"},
            )
        else:
            conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        return response.status

    def connect() -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        conn.connect()
        # http.client writes a request's headers and body separately: without this, Nagle's
        # algorithm holds the body until the server's delayed ACK (tens of ms per PATCH).
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def worker() -> None:
        nonlocal next_index, errors
        conn = connect()
        while True:
            with lock:
                i = next_index
                next_index += 1
            if i >= total:
                return
            due = start + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                status = request(conn, i)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = connect()
                status = 599
            done = time.perf_counter()
            if i < skipped:
                continue
            with lock:
                latencies.append(done - due)
                errors += status >= 400

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start - args.warmup
    latencies.sort()

    def pct(q: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)

    print(
        json.dumps(
            {
                "requests": len(latencies),
                "errors": errors,
                "achieved_rate": round(len(latencies) / elapsed),
                "p50_ms": pct(0.5),
                "p99_ms": pct(0.99),
                "max_ms": pct(1.0),
            }
        )
    )


if __name__ == "__main__":
    main()
