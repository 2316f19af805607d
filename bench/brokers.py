"""The embedded MQTT broker, chosen by measurement: amqtt, iotcore (rumqttd) and Mosquitto.

Each broker runs in a process of its own on a free port, one after the other, in one run:

- ``amqtt`` 0.12 (pure-Python asyncio broker) in a multiprocessing child with its own event
  loop; ``allow_anonymous`` off (every client here gives a username), since amqtt keeps no
  session, and queues nothing, for an anonymous client;
- ``iotcore`` 0.4 (rumqttd 0.20, a Rust broker, in the child process ``iotcore.Broker``
  starts), with the options the platform gives it (10,000 messages in flight, 132 KB payloads);
- ``mosquitto`` (Debian's binary, a private process with a config of its own: no persistence,
  100,000 queued and 10,000 in-flight messages per client), when the machine has it.

Throughput (the default): a publisher process (aiomqtt, QoS 1, at most ``--max-unacked``
messages unacknowledged; ``--publisher raw`` writes the packets to a socket itself, to show
the broker's ceiling rather than the client's) sends ``--messages`` ~100-byte JSON readings
over ``devices/sim-{i}/telemetry`` for 2,000 device ids; one aiomqtt subscriber process (QoS
1, decodes the JSON) counts them. Reported: msgs/s from the first publish to the last message
received, messages lost (and duplicates), the broker process's CPU seconds, RSS and peak RSS;
then the same with two subscriber processes sharing ``$share/g/devices/+/telemetry``, and how
the load split.

Contract (``--check``): QoS 1 both ways, a retained message for a late subscriber, a last will
when a socket drops without DISCONNECT, shared subscriptions splitting the load (one filter per
group, and two filters held in one group), a persistent session getting what was published
while it was away and, again, a message it read but never acknowledged, TLS, and mutual TLS (a
client with the CA's certificate gets in, one without is refused). The certificates come from
a throwaway CA made with ``cryptography`` in a temporary folder, deleted at the end.

    .venv/bin/pip install --target /tmp/amqtt-0.12.1 --no-deps amqtt==0.12.1  # not a dependency
    cd bench && ../.venv/bin/python brokers.py --amqtt-path /tmp/amqtt-0.12.1 \
        [--messages 100000] [--brokers amqtt,iotcore,mosquitto] [--publisher aiomqtt|raw]
    cd bench && ../.venv/bin/python brokers.py --check --amqtt-path /tmp/amqtt-0.12.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import json
import multiprocessing
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import psutil
from mqtt_load import _remaining_length, _utf8

DEVICES = 2000
USER = "twinfleet"  # amqtt keeps sessions only for clients that give a username
MAX_INFLIGHT = 10_000  # as the platform's embedded broker (adapters/broker.py)
MAX_PACKET = 128 * 1024 + 4096
CTX = multiprocessing.get_context("spawn")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, alive: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"no broker listening on {port}")


def payload(i: int) -> bytes:
    """One ~100-byte JSON reading, numbered so the subscriber can count losses."""
    return orjson.dumps(
        {
            "seq": i,
            "ts": time.time(),
            "temperature": round(20 + (i % 97) / 10, 2),
            "humidity": round(40 + (i % 53) / 10, 1),
            "battery": 3.71,
        }
    )


def topic(i: int) -> str:
    return f"devices/sim-{i % DEVICES}/telemetry"


# -- TLS: a throwaway CA, a server certificate for 127.0.0.1, a client certificate -------------


@dataclass(frozen=True)
class Certs:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


def make_certs(folder: Path) -> Certs:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def builder(subject: str, issuer: x509.Name, public: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        builder("bench CA", name("bench CA"), ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    write("ca", ca, ca_key)
    for stem, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            builder(stem, ca.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .add_extension(x509.ExtendedKeyUsage([usage or ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        )
        if stem == "server":
            leaf = leaf.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                False,
            )
        write(stem, leaf.sign(ca_key, hashes.SHA256()), key)
    f = {p.stem + p.suffix: str(p) for p in folder.iterdir()}
    return Certs(f["ca.crt"], f["server.crt"], f["server.key"], f["client.crt"], f["client.key"])


# -- the brokers --------------------------------------------------------------------------------


def _amqtt_main(port: int, tls: dict[str, Any], amqtt_path: str | None) -> None:
    if amqtt_path:
        sys.path.insert(0, amqtt_path)
    from amqtt.broker import Broker

    async def serve() -> None:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", **tls}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False}
            },
        }
        broker = Broker(config)
        await broker.start()
        await asyncio.Event().wait()

    asyncio.run(serve())


def _rumqttd_toml(port: int, certs: Certs, mutual: bool) -> str:
    capath = f'capath = "{certs.ca}"\n' if mutual else ""
    return (
        "id = 0\n[router]\nid = 0\nmax_connections = 10010\nmax_outgoing_packet_count = 200\n"
        "max_segment_size = 104857600\nmax_segment_count = 10\n"
        f'[v4.1]\nname = "v4-1"\nlisten = "127.0.0.1:{port}"\nnext_connection_delay_ms = 1\n'
        f'[v4.1.tls]\ncertpath = "{certs.server_cert}"\nkeypath = "{certs.server_key}"\n{capath}'
        "[v4.1.connections]\nconnection_timeout_ms = 60000\n"
        f"max_payload_size = {MAX_PACKET}\nmax_inflight_count = {MAX_INFLIGHT}\n"
        "dynamic_filters = true\n"
    )


@contextlib.contextmanager
def broker(
    kind: str,
    folder: Path,
    *,
    amqtt_path: str | None = None,
    certs: Certs | None = None,
    mutual: bool = False,
) -> Iterator[tuple[int, int]]:
    """(port, pid of the broker's process) while the broker runs; TLS with ``certs``."""
    port = free_port()
    if kind == "amqtt":
        tls: dict[str, Any] = {}
        if certs:
            tls = {"ssl": True, "certfile": certs.server_cert, "keyfile": certs.server_key}
            tls |= {"cafile": certs.ca} if mutual else {}
        process = CTX.Process(target=_amqtt_main, args=(port, tls, amqtt_path), daemon=True)
        process.start()
        try:
            wait_listening(port, process.is_alive)
            assert process.pid is not None
            yield port, process.pid
        finally:
            process.kill()
            process.join(10)
    elif kind == "iotcore":
        from iotcore import Broker

        if certs:
            config = folder / f"rumqttd-{port}.toml"
            config.write_text(_rumqttd_toml(port, certs, mutual))
            native = Broker(config_path=str(config))
        else:
            native = Broker(
                port=port,
                listen="127.0.0.1",
                max_payload_size=MAX_PACKET,
                max_inflight_count=MAX_INFLIGHT,
            )
        native.start()
        try:
            assert native._process is not None
            yield port, native._process.pid
        finally:
            native.stop()
    elif kind == "mosquitto":
        config = folder / f"mosquitto-{port}.conf"
        user = f"user {psutil.Process().username()}\n" if os.geteuid() == 0 else ""
        text = (
            f"{user}persistence false\nlog_dest stderr\nlog_type error\n"
            f"listener {port} 127.0.0.1\nallow_anonymous true\n"
            f"max_queued_messages 100000\nmax_inflight_messages {MAX_INFLIGHT}\n"
            f"message_size_limit {MAX_PACKET}\n"
        )
        if certs:
            text += f"certfile {certs.server_cert}\nkeyfile {certs.server_key}\n"
            text += f"cafile {certs.ca}\nrequire_certificate {str(mutual).lower()}\n"
        config.write_text(text)
        proc = subprocess.Popen(
            ["mosquitto", "-c", str(config)], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_listening(port, lambda: proc.poll() is None)
            yield port, proc.pid
        finally:
            proc.kill()
            proc.wait(10)
    else:
        raise ValueError(kind)


# -- throughput: a publisher process, one or two subscriber processes ---------------------------


def _connect_packet(
    client_id: str, *, will: tuple[str, bytes] | None = None, keepalive: int = 60
) -> bytes:
    """MQTT 3.1.1 CONNECT with a username (and a QoS 1 last will)."""
    flags, body = 0x82, _utf8(client_id)  # username, clean session
    if will:
        flags |= 0x04 | 0x08  # will, will QoS 1
        body += _utf8(will[0]) + struct.pack("!H", len(will[1])) + will[1]
    body = _utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + body + _utf8(USER)
    return bytes([0x10]) + _remaining_length(len(body)) + body


def _raw_publish(port: int, count: int, max_unacked: int, progress: Any) -> None:
    """Publish from one socket with packets built here (the broker's ceiling, not a client's)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(_connect_packet(f"pub-{uuid.uuid4().hex[:8]}"))
    connack = sock.recv(4)
    if len(connack) < 4 or connack[3] != 0:
        raise ConnectionError(f"refused: {connack!r}")
    acked = [0]

    def read() -> None:
        buffer = b""
        while chunk := sock.recv(65536):
            buffer += chunk
            i = 0
            while i + 2 <= len(buffer) and i + 2 + buffer[i + 1] <= len(buffer):
                acked[0] += buffer[i] == 0x40
                i += 2 + buffer[i + 1]
            buffer = buffer[i:]
            progress[1] = acked[0]

    threading.Thread(target=read, daemon=True).start()

    def packet(i: int) -> bytes:
        head = _utf8(topic(i)) + struct.pack("!H", i % 65535 + 1)
        body = payload(i)
        return bytes([0x32]) + _remaining_length(len(head) + len(body)) + head + body

    progress[0], sent = time.time(), 0
    while sent < count:
        while sent - acked[0] >= max_unacked:
            time.sleep(0.0005)
        n = min(max(1, max_unacked // 4), count - sent, max_unacked - (sent - acked[0]))
        sock.sendall(b"".join(packet(i) for i in range(sent, sent + n)))
        sent += n
    deadline = time.monotonic() + 60
    while acked[0] < count and time.monotonic() < deadline:
        time.sleep(0.01)
    sock.close()


async def _aiomqtt_publish(port: int, count: int, max_unacked: int, progress: Any) -> None:
    """aiomqtt, QoS 1: ``max_unacked`` publishes awaiting their PUBACK at a time."""
    next_i = 0
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=f"pub-{uuid.uuid4().hex[:8]}",
        username=USER,
        max_inflight_messages=max_unacked,
        timeout=60,
    ) as client:
        client.pending_calls_threshold = max_unacked + 1  # else a warning per publish

        async def worker() -> None:
            nonlocal next_i
            while next_i < count:
                i, next_i = next_i, next_i + 1
                await client.publish(topic(i), payload(i), qos=1)
                progress[1] += 1

        progress[0] = time.time()
        await asyncio.gather(*(worker() for _ in range(min(max_unacked, count))))


def _publisher(port: int, count: int, max_unacked: int, raw: bool, progress: Any) -> None:
    """Publish; ``progress`` holds [start time, PUBACKs so far, end time, CPU seconds]."""
    if raw:
        _raw_publish(port, count, max_unacked, progress)
    else:
        asyncio.run(_aiomqtt_publish(port, count, max_unacked, progress))
    progress[2], progress[3] = time.time(), time.process_time()


def _subscriber(
    port: int, topic_filter: str, k: int, count: int, counts: Any, ready: Any, stop: Any, out: Any
) -> None:
    seen = bytearray(count)
    got = dupes = 0
    first = last = 0.0

    async def run() -> None:
        nonlocal got, dupes, first, last
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier=f"sub-{k}-{uuid.uuid4().hex[:6]}", username=USER
        ) as client:
            await client.subscribe(topic_filter, qos=1)
            ready.put(k)

            async def read() -> None:
                nonlocal got, dupes, first, last
                async for message in client.messages:
                    seq = orjson.loads(message.payload)["seq"]  # type: ignore[arg-type]
                    last = time.time()
                    first = first or last
                    if seen[seq]:
                        dupes += 1
                        continue
                    seen[seq] = 1
                    got += 1
                    counts[k] = got

            reader = asyncio.create_task(read())
            while not stop.is_set() and not reader.done():
                await asyncio.wait({reader}, timeout=0.1)  # stop: another process's Event
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    asyncio.run(run())
    out.put(
        {
            "who": k,
            "received": got,
            "duplicates": dupes,
            "first": first,
            "last": last,
            "cpu_s": time.process_time(),
            "seen": bytes(seen),
        }
    )


def throughput(
    port: int, pid: int, count: int, max_unacked: int, share: int, raw: bool, idle_s: float
) -> dict[str, Any]:
    """``share`` subscriber processes (1: a plain subscription) take ``count`` messages.

    Done when all arrived, or nothing arrived for ``idle_s`` while the publisher finished or
    had 5,000 more messages acknowledged (a broker that takes them and delivers none)."""
    topic_filter = "$share/g/devices/+/telemetry" if share > 1 else "devices/+/telemetry"
    counts = CTX.Array("q", share, lock=False)
    progress = CTX.Array("d", 4, lock=False)
    ready, out, stop = CTX.Queue(), CTX.Queue(), CTX.Event()
    subs = [
        CTX.Process(
            target=_subscriber,
            args=(port, topic_filter, k, count, counts, ready, stop, out),
            daemon=True,
        )
        for k in range(share)
    ]
    pub = CTX.Process(
        target=_publisher, args=(port, count, max_unacked, raw, progress), daemon=True
    )
    receivers: dict[int, dict[str, Any]] = {}
    try:
        for sub in subs:
            sub.start()
        for _ in subs:
            ready.get(timeout=30)
        broker_process = psutil.Process(pid)
        cpu0 = sum(broker_process.cpu_times()[:2])
        load = os.getloadavg()[0]
        pub.start()
        previous, since, acked_then = -1, time.monotonic(), 0.0
        deadline = time.monotonic() + 170
        while time.monotonic() < deadline:
            got = sum(counts)
            if got >= count:
                break
            if got != previous:
                previous, since, acked_then = got, time.monotonic(), progress[1]
            elif time.monotonic() - since > idle_s and (
                not pub.is_alive() or progress[1] - acked_then >= 5000
            ):
                break
            time.sleep(0.05)
        if sum(counts) >= count:
            pub.join(30)  # its last PUBACKs
        stopped_early = pub.is_alive()
        if stopped_early:
            pub.kill()
        cpu = sum(broker_process.cpu_times()[:2]) - cpu0
        rss = broker_process.memory_info().rss
        peak = _peak_rss(pid)
        stop.set()
        while len(receivers) < share:
            result = out.get(timeout=60)
            receivers[result["who"]] = result
    finally:
        stop.set()
        for process in (pub, *subs):
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)
    started, acked, ended, pub_cpu = progress[:]
    union = bytearray(count)
    for r in receivers.values():
        union = bytearray(a | b for a, b in zip(union, r["seen"], strict=True))
    distinct = sum(union)
    last = max((r["last"] for r in receivers.values() if r["last"]), default=0.0)
    elapsed = last - started if last else 0.0
    return {
        "subscribers": share,
        "msgs_per_s": round(distinct / elapsed) if elapsed > 0 else 0,
        "published_acked": int(acked),
        "received": distinct,
        "lost": int(acked) - distinct,
        "duplicates": sum(r["duplicates"] for r in receivers.values()),
        "split": [receivers[k]["received"] for k in range(share)],
        "publisher_stopped_early": stopped_early,
        "publish_msgs_per_s": round(acked / ((ended or time.time()) - started)),
        "broker_cpu_s": round(cpu, 2),
        "broker_cpu_us_per_msg": round(cpu / max(acked, 1) * 1e6, 1),
        "broker_rss_mb": round(rss / 2**20, 1),
        "broker_peak_rss_mb": round(peak / 2**20, 1),
        "publisher_cpu_s": round(pub_cpu, 2) if not stopped_early else None,
        "subscriber_cpu_s": [round(receivers[k]["cpu_s"], 2) for k in range(share)],
        "load_avg_1m_at_start": round(load, 2),
    }


def _peak_rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# -- the contract devices and gateways rely on ------------------------------------------------


class Contract:
    """One broker's answers: each check is a coroutine that returns True or raises why not."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.tag = uuid.uuid4().hex[:6]

    def client(self, **kw: Any) -> aiomqtt.Client:
        kw.setdefault("identifier", f"c-{uuid.uuid4().hex[:8]}")
        return aiomqtt.Client("127.0.0.1", self.port, username=USER, timeout=5, **kw)

    @staticmethod
    async def take(
        c: aiomqtt.Client, topic: str, n: int = 1, seconds: float = 3.0
    ) -> list[aiomqtt.Message]:
        """Up to ``n`` messages on ``topic`` (a filter) within ``seconds``; others ignored."""
        got: list[aiomqtt.Message] = []

        async def read() -> None:
            async for message in c.messages:
                if message.topic.matches(topic):
                    got.append(message)
                if len(got) >= n:
                    return

        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(read(), seconds)
        return got

    async def qos1_both_ways(self) -> bool:
        async with self.client() as sub, self.client() as pub:
            await sub.subscribe(f"{self.tag}/q", qos=1)
            await pub.publish(f"{self.tag}/q", b"1", qos=1)  # returns on the broker's PUBACK
            got = await self.take(sub, f"{self.tag}/q")
            if not got or got[0].qos != 1:
                raise AssertionError(f"delivered: {[(m.payload, m.qos) for m in got]}")
        return True

    async def retained(self) -> bool:
        async with self.client() as pub:
            await pub.publish(f"{self.tag}/r", b"kept", qos=1, retain=True)
        async with self.client() as sub:
            await sub.subscribe(f"{self.tag}/r", qos=1)
            got = await self.take(sub, f"{self.tag}/r")
        if not got or got[0].payload != b"kept" or not got[0].retain:
            raise AssertionError("no retained message for a late subscriber")
        return True

    async def only_what_was_subscribed(self) -> bool:
        """A client gets nothing it did not subscribe to (amqtt 0.12.1 sends a connecting client
        every retained message whose topic any client subscribed to)."""
        async with self.client() as pub:
            await pub.publish(f"{self.tag}/desired/d1", b"{}", qos=1, retain=True)
        async with self.client() as watcher:
            await watcher.subscribe(f"{self.tag}/desired/+", qos=1)
            async with self.client() as device:
                await device.subscribe(f"{self.tag}/commands/d2", qos=1)
                got = await self.take(device, "#", seconds=1.5)
        if got:
            raise AssertionError(f"got {[str(m.topic) for m in got]}, subscribed to none")
        return True

    async def last_will(self) -> bool:
        async with self.client() as sub:
            await sub.subscribe(f"{self.tag}/will", qos=1)
            with socket.create_connection(("127.0.0.1", self.port)) as dying:
                dying.sendall(_connect_packet(f"w-{self.tag}", will=(f"{self.tag}/will", b"gone")))
                if dying.recv(4)[:1] != b"\x20":
                    raise AssertionError("no CONNACK")
                await asyncio.sleep(0.2)
            # the socket is closed without DISCONNECT: the broker must publish the will
            got = await self.take(sub, f"{self.tag}/will", seconds=5)
        if not got or got[0].payload != b"gone":
            raise AssertionError("no last will within 5 s")
        return True

    async def _shared(self, groups: tuple[str, str]) -> bool:
        counts = [0, 0]
        async with self.client() as a, self.client() as b, self.client() as pub:
            for c in (a, b):
                await c.subscribe(f"$share/{groups[0]}/{self.tag}/s/+", qos=1)
                await c.subscribe(f"$share/{groups[1]}/{self.tag}/t/+", qos=1)

            async def read(k: int, c: aiomqtt.Client) -> None:
                async for message in c.messages:
                    counts[k] += str(message.topic).startswith((f"{self.tag}/s/", f"{self.tag}/t/"))

            readers = [asyncio.create_task(read(k, c)) for k, c in enumerate((a, b))]
            for i in range(20):
                await pub.publish(f"{self.tag}/s/{i}", b"x", qos=1)
                await pub.publish(f"{self.tag}/t/{i}", b"x", qos=1)
            await asyncio.sleep(2)
            for reader in readers:
                reader.cancel()
        if sum(counts) != 40 or not all(counts):
            raise AssertionError(f"of 40 messages, {counts[0]} + {counts[1]} delivered")
        return True

    async def shared_one_filter_per_group(self) -> bool:
        return await self._shared((f"s{self.tag}", f"t{self.tag}"))

    async def shared_two_filters_in_one_group(self) -> bool:
        return await self._shared((f"g{self.tag}", f"g{self.tag}"))

    async def persistent_session(self) -> bool:
        ident = f"p-{self.tag}"
        async with self.client(identifier=ident, clean_session=False) as sub:
            await sub.subscribe(f"{self.tag}/p", qos=1)
        async with self.client() as pub:
            for i in range(5):
                await pub.publish(f"{self.tag}/p", str(i).encode(), qos=1)
        async with self.client(identifier=ident, clean_session=False) as sub:
            got = await self.take(sub, f"{self.tag}/p", 5)
        if sorted(m.payload for m in got) != [str(i).encode() for i in range(5)]:
            raise AssertionError(f"{len(got)} of 5 queued messages on reconnect")
        return True

    async def unacked_redelivered(self) -> bool:
        ident = f"u-{self.tag}"
        sub = self.client(identifier=ident, clean_session=False)
        sub._client.manual_ack_set(True)  # read, never acknowledged
        async with sub:
            await sub.subscribe(f"{self.tag}/u", qos=1)
            async with self.client() as pub:
                await pub.publish(f"{self.tag}/u", b"ack me", qos=1)
            if not await self.take(sub, f"{self.tag}/u"):
                raise AssertionError("not delivered the first time")
        async with self.client(identifier=ident, clean_session=False) as again:
            got = await self.take(again, f"{self.tag}/u")
        if not got or got[0].payload != b"ack me":
            raise AssertionError("an unacknowledged message was not sent again")
        return True

    def checks(self) -> dict[str, Callable[[], Coroutine[Any, Any, bool]]]:
        return {
            "QoS 1 both ways": self.qos1_both_ways,
            "retained message for a late subscriber": self.retained,
            "a client gets only what it subscribed to": self.only_what_was_subscribed,
            "last will on a socket dropped without DISCONNECT": self.last_will,
            "shared subscription splits (one filter per group)": self.shared_one_filter_per_group,
            "shared subscription, two filters in one group": self.shared_two_filters_in_one_group,
            "persistent session gets what came while away": self.persistent_session,
            "unacknowledged QoS 1 message sent again on reconnect": self.unacked_redelivered,
        }


async def _tls_round_trip(port: int, certs: Certs, with_client_cert: bool) -> None:
    context = ssl.create_default_context(cafile=certs.ca)
    if with_client_cert:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    async with aiomqtt.Client(
        "127.0.0.1", port, username=USER, tls_context=context, timeout=5
    ) as client:
        await client.subscribe("tls/x", qos=1)
        await client.publish("tls/x", b"sealed", qos=1)
        if not await Contract.take(client, "tls/x"):
            raise AssertionError("nothing delivered over TLS")


async def _answer(check: Coroutine[Any, Any, Any]) -> str:
    try:
        await asyncio.wait_for(check, 20)
        return "yes"
    except Exception as err:
        return f"no ({type(err).__name__}: {err})".replace("\n", " ")[:160]


def contract(kind: str, folder: Path, certs: Certs, amqtt_path: str | None) -> dict[str, str]:
    answers: dict[str, str] = {}
    with broker(kind, folder, amqtt_path=amqtt_path) as (port, _):
        for name, check in Contract(port).checks().items():
            answers[name] = asyncio.run(_answer(check()))
    with broker(kind, folder, amqtt_path=amqtt_path, certs=certs) as (port, _):
        answers["TLS (server certificate checked by the client)"] = asyncio.run(
            _answer(_tls_round_trip(port, certs, False))
        )
    with broker(kind, folder, amqtt_path=amqtt_path, certs=certs, mutual=True) as (port, _):
        with_cert = asyncio.run(_answer(_tls_round_trip(port, certs, True)))
        without = asyncio.run(_answer(_tls_round_trip(port, certs, False)))
        if with_cert != "yes":
            answers["mutual TLS"] = f"no (a client with a certificate: {with_cert})"
        elif without == "yes":
            answers["mutual TLS"] = "no (a client without a certificate got in)"
        else:
            answers["mutual TLS"] = "yes"
    return answers


# -- the run ----------------------------------------------------------------------------------


def available(kind: str, amqtt_path: str | None) -> str | None:
    """Why ``kind`` cannot run here (None: it can)."""
    if kind == "mosquitto":
        return None if shutil.which("mosquitto") else "no mosquitto binary on PATH"
    module = {"amqtt": "amqtt", "iotcore": "iotcore"}.get(kind)
    if module is None:
        return f"unknown broker {kind!r}"
    probe = f"import sys; sys.path.insert(0, {amqtt_path or ''!r}); import {module}"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False)
    return None if done.returncode == 0 else f"{module} is not importable"


def markdown(results: dict[str, Any]) -> str:
    rows = [
        "| broker | subscribers | msgs/s end to end | published (acked) | lost | dupes | split "
        "| broker CPU s (us/msg) | RSS MB (peak) | publisher msgs/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows.extend(
        f"| {kind} | {r['subscribers']} | {r['msgs_per_s']:,} | {r['published_acked']:,}"
        f"{' (stopped: nothing delivered)' if r['publisher_stopped_early'] else ''} "
        f"| {r['lost']:,} | {r['duplicates']} | {' / '.join(f'{n:,}' for n in r['split'])} "
        f"| {r['broker_cpu_s']} ({r['broker_cpu_us_per_msg']}) "
        f"| {r['broker_rss_mb']} ({r['broker_peak_rss_mb']}) "
        f"| {r['publish_msgs_per_s']:,} |"
        for kind, runs in results.items()
        for r in runs
    )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--max-unacked", type=int, default=2000)
    parser.add_argument("--brokers", default="amqtt,iotcore,mosquitto")
    parser.add_argument("--publisher", choices=("aiomqtt", "raw"), default="aiomqtt")
    parser.add_argument("--amqtt-path", help="a folder holding amqtt (pip install --target)")
    parser.add_argument("--idle", type=float, default=5.0, help="s without progress: done")
    parser.add_argument("--check", action="store_true", help="the contract, not throughput")
    parser.add_argument("--name", default=None, help="results file (bench/results/NAME.json)")
    args = parser.parse_args()
    kinds, skipped = [], {}
    for kind in args.brokers.split(","):
        if why := available(kind, args.amqtt_path):
            skipped[kind] = why
        else:
            kinds.append(kind)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="brokers-") as tmp:
        folder = Path(tmp)
        if args.check:
            (folder / "tls").mkdir()
            certs = make_certs(folder / "tls")
            for kind in kinds:
                results[kind] = contract(kind, folder, certs, args.amqtt_path)
                print(json.dumps({kind: results[kind]}), flush=True)
        else:
            for kind in kinds:
                runs = []
                for share in (1, 2):
                    with broker(kind, folder, amqtt_path=args.amqtt_path) as (port, pid):
                        runs.append(
                            throughput(
                                port,
                                pid,
                                args.messages,
                                args.max_unacked,
                                share,
                                args.publisher == "raw",
                                args.idle,
                            )
                        )
                    print(json.dumps({kind: runs[-1]}), flush=True)
                results[kind] = runs
    from common import report  # imports Ray: only once the children are gone

    name = args.name or ("brokers_contract" if args.check else f"brokers_{args.publisher}")
    report(
        name,
        {
            "command": "python bench/brokers.py " + " ".join(sys.argv[1:]),
            "messages": args.messages,
            "publisher": args.publisher,
            "skipped": skipped,
            "results": results,
        },
    )
    if args.check:
        names = list(next(iter(results.values()), {}))
        print("\n| check | " + " | ".join(results) + " |")
        print("| --- |" + " --- |" * len(results))
        for check in names:
            print(f"| {check} | " + " | ".join(results[k][check] for k in results) + " |")
    else:
        print("\n" + markdown(results))


if __name__ == "__main__":
    main()
