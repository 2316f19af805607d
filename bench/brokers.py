"""The embedded MQTT broker, chosen by measurement: amqtt, iotcore (rumqttd) and Mosquitto.

Each broker runs in a process of its own on a free port, one after the other, in one run:

- amqtt 0.12 (pure-Python asyncio broker) in a child process of its own;
- iotcore 0.4 (rumqttd, a Rust broker, in the child process iotcore starts);
- Mosquitto (Debian's binary) with its defaults, ``max_queued_messages`` raised, when the
  machine has it.

Throughput: a QoS 1 publisher (bench/mqtt_load.py, at most ``--max-unacked`` messages
unacknowledged) sends ``--messages`` JSON readings over 2,000 device topics; one aiomqtt
subscriber (QoS 1, decodes the JSON) receives them. Reported: msgs/s from the first publish
to the last message received, messages lost, the broker process's CPU seconds and RSS; then
the same with two subscribers sharing ``$share/g/devices/+/telemetry``.

Contract (``--contract``): QoS 1 both ways, a retained message for a late subscriber, a last
will on a dropped socket, shared subscriptions splitting the load, a persistent session
getting what was published while it was away, and a message it had not acknowledged again.

    .venv/bin/pip install amqtt==0.12.1  # no longer a dependency: for this comparison only
    .venv/bin/python bench/brokers.py [--messages 100000] [--brokers amqtt,iotcore,mosquitto]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import multiprocessing
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import psutil
from common import report

LOAD = Path(__file__).with_name("mqtt_load.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"no broker on {port}")


def _amqtt_main(port: int) -> None:
    from amqtt.broker import Broker

    async def serve() -> None:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        broker = Broker(config)
        await broker.start()
        await asyncio.Event().wait()

    asyncio.run(serve())


@contextlib.contextmanager
def broker(kind: str, folder: Path) -> Iterator[tuple[int, int]]:
    """(port, pid of the broker's process) while the broker runs."""
    port = free_port()
    if kind == "amqtt":
        process = multiprocessing.get_context("spawn").Process(
            target=_amqtt_main, args=(port,), daemon=True
        )
        process.start()
        try:
            wait_listening(port)
            assert process.pid is not None
            yield port, process.pid
        finally:
            process.kill()
            process.join(10)
    elif kind == "iotcore":
        from iotcore import Broker

        native = Broker(port=port, listen="127.0.0.1")
        native.start()
        try:
            assert native._process is not None
            yield port, native._process.pid
        finally:
            native.stop()
    elif kind == "mosquitto":
        config = folder / f"mosquitto-{port}.conf"
        config.write_text(
            f"user {getpass.getuser()}\npersistence false\nlog_dest stderr\nlog_type error\n"
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        )
        proc = subprocess.Popen(["mosquitto", "-c", str(config)], stderr=subprocess.DEVNULL)
        try:
            wait_listening(port)
            yield port, proc.pid
        finally:
            proc.kill()
            proc.wait(10)
    else:
        raise ValueError(kind)


def publish(port: int, count: int, max_unacked: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(LOAD), "--port", str(port), "--rate", "1000000", "--count",
         str(count), "--devices", "2000", "--id-format", "b{:04d}", "--max-unacked",
         str(max_unacked)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return started


def throughput(port: int, pid: int, count: int, max_unacked: int, share: int) -> dict[str, Any]:
    """``share`` subscribers (1: a plain subscription) take a burst; msgs/s and CPU."""
    topic = "$share/g/devices/+/telemetry" if share > 1 else "devices/+/telemetry"
    received = [0] * share
    last = [0.0]
    ready = threading.Barrier(share + 1)
    done = threading.Event()

    async def subscriber(k: int) -> None:
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier=f"sub-{k}-{uuid.uuid4().hex[:6]}"
        ) as client:
            await client.subscribe(topic, qos=1)
            ready.wait(30)
            async for message in client.messages:
                orjson.loads(message.payload)  # type: ignore[arg-type]
                received[k] += 1
                last[0] = time.perf_counter()
                if sum(received) >= count or done.is_set():
                    return

    threads = [
        threading.Thread(target=asyncio.run, args=(subscriber(k),), daemon=True)
        for k in range(share)
    ]
    for thread in threads:
        thread.start()
    ready.wait(30)
    process = psutil.Process(pid)
    cpu = sum(process.cpu_times()[:2])
    started = publish(port, count, max_unacked)
    deadline = time.monotonic() + 120
    while sum(received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    done.set()
    got = sum(received)
    return {
        "subscribers": share,
        "msgs_per_s": round(got / (last[0] - started), 1) if got else 0.0,
        "lost": count - got,
        "split": received,
        "broker_cpu_s": round(sum(process.cpu_times()[:2]) - cpu, 2),
        "broker_rss_mb": round(process.memory_info().rss / 2**20, 1),
    }


# -- the contract devices and gateways rely on -------------------------------------------------


async def _contract(port: int) -> dict[str, bool | str]:
    tag = uuid.uuid4().hex[:6]
    result: dict[str, bool | str] = {}

    def client(**kw: Any) -> aiomqtt.Client:
        kw.setdefault("identifier", f"c-{uuid.uuid4().hex[:8]}")
        return aiomqtt.Client("127.0.0.1", port, timeout=5, **kw)

    async def first(c: aiomqtt.Client, seconds: float = 3.0) -> aiomqtt.Message | None:
        async def one() -> aiomqtt.Message:
            async for message in c.messages:
                return message
            raise RuntimeError

        try:
            return await asyncio.wait_for(one(), seconds)
        except (TimeoutError, asyncio.TimeoutError):
            return None

    async def check(name: str, coro: Any) -> None:
        try:
            result[name] = bool(await coro)
        except Exception as err:
            result[name] = f"no ({type(err).__name__}: {err})"

    async def qos1() -> bool:
        async with client() as sub, client() as pub:
            await sub.subscribe(f"{tag}/q", qos=1)
            await pub.publish(f"{tag}/q", b"1", qos=1)
            message = await first(sub)
            return message is not None and message.qos == 1

    async def retained() -> bool:
        async with client() as pub:
            await pub.publish(f"{tag}/r", b"kept", qos=1, retain=True)
        async with client() as sub:
            await sub.subscribe(f"{tag}/r", qos=1)
            message = await first(sub)
            return message is not None and message.payload == b"kept"

    async def will() -> bool:
        async with client() as sub:
            await sub.subscribe(f"{tag}/will", qos=1)
            dying = client(will=aiomqtt.Will(f"{tag}/will", b"gone", qos=1), keepalive=60)
            await dying.__aenter__()
            dying._client.socket().close()  # no DISCONNECT: the broker must send the will
            message = await first(sub, 5)
            with contextlib.suppress(Exception):
                await dying.__aexit__(None, None, None)
            return message is not None and message.payload == b"gone"

    async def shared(one_group: bool) -> bool:
        """Two members of a group take a share each, and members holding two filters get all
        of the messages, in one group (rumqttd loses some) or in a group per filter."""
        counts = [0, 0]
        groups = (f"g{tag}", f"g{tag}") if one_group else (f"g{tag}-s", f"g{tag}-t")
        async with client() as a, client() as b, client() as pub:
            for c in (a, b):
                await c.subscribe(f"$share/{groups[0]}/{tag}/s/+", qos=1)
                await c.subscribe(f"$share/{groups[1]}/{tag}/t/+", qos=1)

            async def read(k: int, c: aiomqtt.Client) -> None:
                async for _ in c.messages:
                    counts[k] += 1

            readers = [asyncio.create_task(read(k, c)) for k, c in enumerate((a, b))]
            for i in range(20):
                await pub.publish(f"{tag}/s/{i}", b"x", qos=1)
                await pub.publish(f"{tag}/t/{i}", b"x", qos=1)
            await asyncio.sleep(2)
            for reader in readers:
                reader.cancel()
        if sum(counts) != 40:
            raise RuntimeError(f"{sum(counts)} of 40 delivered")
        return all(counts)

    async def persistent() -> bool:
        ident = f"p-{tag}"
        async with client(identifier=ident, clean_session=False) as sub:
            await sub.subscribe(f"{tag}/p", qos=1)
        async with client() as pub:
            await pub.publish(f"{tag}/p", b"while away", qos=1)
        async with client(identifier=ident, clean_session=False) as sub:
            message = await first(sub)
            return message is not None and message.payload == b"while away"

    async def unacked_again() -> bool:
        ident = f"u-{tag}"
        sub = client(identifier=ident, clean_session=False)
        sub._client.manual_ack_set(True)
        async with sub:
            await sub.subscribe(f"{tag}/u", qos=1)
            async with client() as pub:
                await pub.publish(f"{tag}/u", b"ack me", qos=1)
            got = await first(sub)
            assert got is not None  # read, never acknowledged
        async with client(identifier=ident, clean_session=False) as again:
            message = await first(again)
            return message is not None and message.payload == b"ack me"

    await check("qos1", qos1())
    await check("retained", retained())
    await check("shared subscriptions, two filters in one group", shared(True))
    await check("shared subscriptions, a group per filter", shared(False))
    await check("persistent session", persistent())
    await check("unacknowledged sent again", unacked_again())
    await check("last will", will())  # last: the socket it closes under aiomqtt stays broken
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--max-unacked", type=int, default=2000)
    parser.add_argument("--brokers", default="amqtt,iotcore,mosquitto")
    parser.add_argument("--name", default="brokers")
    args = parser.parse_args()
    kinds = [k for k in args.brokers.split(",") if k != "mosquitto" or shutil.which("mosquitto")]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="brokers-") as folder:
        for kind in kinds:
            with broker(kind, Path(folder)) as (port, pid):
                contract = asyncio.run(_contract(port))
            runs = []
            for share in (1, 2):
                with broker(kind, Path(folder)) as (port, pid):
                    runs.append(throughput(port, pid, args.messages, args.max_unacked, share))
            results[kind] = {"throughput": runs, "contract": contract}
            print(json.dumps({kind: results[kind]}), flush=True)
    report(args.name, {"command": " ".join(sys.argv), "messages": args.messages, **results})


if __name__ == "__main__":
    main()
