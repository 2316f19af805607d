"""A fast MQTT load generator for the benchmarks: MQTT 3.1.1 packets written to one socket.

A Python MQTT client spends most of its time per message; a load generator must not be the
bottleneck of what it measures. This one encodes PUBLISH packets itself, writes them in large
chunks at a set rate, and counts PUBACKs in a reader thread (QoS 1).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

__all__ = ["RawPublisher"]


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


class RawPublisher:
    """One MQTT connection that publishes pre-built messages as fast as asked."""

    def __init__(self, host: str, port: int, *, client_id: str, qos: int = 1) -> None:
        if qos not in (0, 1):
            raise ValueError("qos 0 or 1")
        self.qos = qos
        self.acked = 0
        self._sock = socket.create_connection((host, port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + _utf8(client_id)
        self._sock.sendall(bytes([0x10]) + _remaining_length(len(body)) + body)
        connack = self._sock.recv(4)
        if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the connection: {connack!r}")
        self._packet_id = 0
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while not self._closed:
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            # PUBACK is 4 bytes: 0x40 0x02 id id; PINGRESP 2 bytes: 0xD0 0x00
            i = 0
            while i + 2 <= len(buffer):
                kind, size = buffer[i], buffer[i + 1]
                if i + 2 + size > len(buffer):
                    break
                if kind == 0x40:
                    self.acked += 1
                i += 2 + size
            buffer = buffer[i:]

    def packet(self, topic: str, payload: bytes) -> bytes:
        """One PUBLISH packet (QoS as configured)."""
        head = _utf8(topic)
        if self.qos:
            self._packet_id = self._packet_id % 65535 + 1
            head += struct.pack("!H", self._packet_id)
        return (
            bytes([0x30 | (self.qos << 1)])
            + _remaining_length(len(head) + len(payload))
            + (head + payload)
        )

    def run(
        self,
        count: int,
        make: Callable[[int, float], tuple[str, bytes]],
        *,
        rate: float,
        chunk_s: float = 0.01,
        max_unacked: int | None = None,
    ) -> float:
        """Publish ``count`` messages built by ``make(i, now)`` at ``rate``, with at most
        ``max_unacked`` unacknowledged (QoS 1; None: no limit); returns seconds."""
        start = time.perf_counter()
        sent = 0
        per_chunk = max(1, int(rate * chunk_s))
        if max_unacked is not None:
            per_chunk = min(per_chunk, max(1, max_unacked // 4))
        while sent < count:
            while max_unacked is not None and self.qos and sent - self.acked >= max_unacked:
                time.sleep(0.0005)  # a well-behaved publisher waits for its PUBACKs
            due = start + sent / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            n = min(per_chunk, count - sent)
            now = time.time()
            self._sock.sendall(b"".join(self.packet(*make(sent + k, now)) for k in range(n)))
            sent += n
        return time.perf_counter() - start

    def wait_acked(self, count: int, timeout: float = 60.0) -> bool:
        """Wait until ``count`` PUBACKs arrived (QoS 1)."""
        deadline = time.monotonic() + timeout
        while self.qos and self.acked < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.qos or self.acked >= count

    def close(self) -> None:
        """Disconnect cleanly."""
        self._closed = True
        try:
            self._sock.sendall(b"\xe0\x00")
            self._sock.close()
        except OSError:
            pass


def main() -> None:
    """Publish telemetry for many devices at a set rate (run as a separate process)."""
    import argparse
    import json
    import random

    import orjson

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--id-format", default="e2e-{:06d}")
    parser.add_argument("--topic", default="devices/{}/telemetry")
    parser.add_argument("--qos", type=int, default=1)
    parser.add_argument("--max-unacked", type=int, default=None)
    parser.add_argument("--first", type=int, default=0, help="index of the first message")
    args = parser.parse_args()
    ids = [args.id_format.format(i) for i in range(args.devices)]
    rng = random.Random(7)
    noise = [round(rng.gauss(0, 0.2), 3) for _ in range(4096)]

    def make(i: int, now: float) -> tuple[str, bytes]:
        device = ids[i % len(ids)]
        payload = {"temperature": 21.0 + noise[i % 4096], "humidity": 45.0, "ts": now}
        return args.topic.format(device), orjson.dumps(payload)

    publisher = RawPublisher(
        args.host, args.port, client_id=f"bench-pub-{rng.getrandbits(32):08x}", qos=args.qos
    )
    seconds = publisher.run(
        args.count,
        lambda i, now: make(args.first + i, now),
        rate=args.rate,
        max_unacked=args.max_unacked,
    )
    acked = publisher.wait_acked(args.count)
    publisher.close()
    print(json.dumps({"published": args.count, "seconds": seconds, "acked": acked}))


if __name__ == "__main__":
    main()
