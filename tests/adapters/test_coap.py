"""The CoAP endpoint with a real aiocoap client over UDP on 127.0.0.1.

Most tests run against ``InProcessPlatform`` (one in-process host, no Ray); one runs the same device
conversation against the Ray runtime.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import aiocoap
import cbor2
import orjson
import pytest
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption
from helpers import eventually

from twinfleet.adapters.coap import CoapEndpoint, _Batcher
from twinfleet.runtime import (
    DeviceMessage,
    Event,
    HostSettings,
    InProcessPlatform,
    RayPlatform,
    Rejection,
    Runtime,
)
from twinfleet.runtime.runtime import RuntimeSettings

WAIT = 10.0  # bound of every wait: a failing test fails, it never hangs

JSON, CBOR, SENML_JSON, SENML_CBOR, TEXT = 50, 60, 110, 112, 0


@pytest.fixture
async def fleet() -> AsyncIterator[InProcessPlatform]:
    fleet = InProcessPlatform.create(settings=HostSettings(event_interval_s=0.01))
    yield fleet
    await fleet.host.stop()


@pytest.fixture
async def endpoint(fleet: InProcessPlatform) -> AsyncIterator[CoapEndpoint]:
    async with CoapEndpoint(fleet, port=0) as endpoint:
        yield endpoint


@pytest.fixture
async def client() -> AsyncIterator[aiocoap.Context]:
    context = await aiocoap.Context.create_client_context()
    yield context
    await context.shutdown()


def message(
    endpoint: CoapEndpoint,
    code: Code,
    *path: str,
    payload: bytes = b"",
    content_format: int | None = None,
    accept: int | None = None,
    observe: int | None = None,
) -> aiocoap.Message:
    msg = aiocoap.Message(code=code, uri=f"coap://127.0.0.1:{endpoint.port}", payload=payload)
    msg.opt.uri_path = path
    if content_format is not None:
        msg.opt.content_format = content_format
    if accept is not None:
        msg.opt.accept = accept
    if observe is not None:
        msg.opt.observe = observe
    return msg


async def send(client: aiocoap.Context, msg: aiocoap.Message) -> aiocoap.Message:
    return await asyncio.wait_for(client.request(msg).response, WAIT)


async def post(
    client: aiocoap.Context,
    endpoint: CoapEndpoint,
    *path: str,
    body: Any,
    content_format: int | None = JSON,
) -> aiocoap.Message:
    if isinstance(body, bytes):
        payload = body
    elif content_format in (CBOR, SENML_CBOR):
        payload = cbor2.dumps(body)
    else:
        payload = orjson.dumps(body)
    msg = message(endpoint, Code.POST, *path, payload=payload, content_format=content_format)
    return await send(client, msg)


async def get(
    client: aiocoap.Context, endpoint: CoapEndpoint, *path: str, accept: int | None = None
) -> aiocoap.Message:
    return await send(client, message(endpoint, Code.GET, *path, accept=accept))


async def rejections(fleet: InProcessPlatform) -> list[Event]:
    return await fleet.hub.poll(0, types={"rejected"})


# -- device messages in ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_format", "body"),
    [
        pytest.param(None, {"temperature": 21.5, "humidity": 40}, id="no-format-is-json"),
        pytest.param(JSON, {"temperature": 21.5, "humidity": 40}, id="json"),
        pytest.param(CBOR, {"temperature": 21.5, "humidity": 40}, id="cbor"),
        pytest.param(
            SENML_JSON,
            [{"bn": "urn:dev:s-1:", "n": "temperature", "v": 21.5}, {"n": "humidity", "v": 40}],
            id="senml-json",
        ),
        pytest.param(
            SENML_CBOR,
            [{-2: "urn:dev:s-1:", 0: "temperature", 2: 21.5}, {0: "humidity", 2: 40}],
            id="senml-cbor",
        ),
    ],
)
async def test_telemetry_in_each_content_format_lands_in_the_twin(
    fleet: InProcessPlatform,
    endpoint: CoapEndpoint,
    client: aiocoap.Context,
    content_format: int | None,
    body: Any,
) -> None:
    answer = await post(
        client, endpoint, "devices", "s-1", "telemetry", body=body, content_format=content_format
    )
    assert answer.code == Code.CHANGED, answer.payload
    doc = await fleet.host.get("s-1")
    assert doc["reported"] == {"temperature": 21.5, "humidity": 40}
    assert doc["connectivity"]["protocol"] == "coap"
    assert doc["connectivity"]["online"] is True
    assert endpoint.stats["accepted"] == 1
    assert await rejections(fleet) == []


async def test_reported_patch_lands(
    fleet: InProcessPlatform, endpoint: CoapEndpoint, client: aiocoap.Context
) -> None:
    patch = {"firmware": "1.4.2", "config": {"interval": 30, "mode": "eco"}}
    answer = await post(client, endpoint, "devices", "r-1", "reported", body=patch)
    assert answer.code == Code.CHANGED, answer.payload
    answer = await post(
        client,
        endpoint,
        "devices",
        "r-1",
        "reported",
        body={"config": {"mode": None}},
        content_format=CBOR,
    )
    assert answer.code == Code.CHANGED, answer.payload
    doc = await fleet.host.get("r-1")
    assert doc["reported"] == {"firmware": "1.4.2", "config": {"interval": 30}}
    assert doc["connectivity"]["protocol"] == "coap"


async def test_a_block_wise_body_of_several_datagrams_is_reassembled(
    fleet: InProcessPlatform, endpoint: CoapEndpoint, client: aiocoap.Context
) -> None:
    body = {f"metric_{i:03d}": 1000.0 + i / 8 for i in range(250)}
    payload = orjson.dumps(body)
    assert 4 * 1024 < len(payload) < 8 * 1024  # aiocoap sends 1 KB blocks
    answer = await post(client, endpoint, "devices", "b-1", "telemetry", body=payload)
    assert answer.code == Code.CHANGED, answer.payload
    assert (await fleet.host.get("b-1"))["reported"] == body


async def test_concurrent_requests_are_batched_and_all_answered(
    fleet: InProcessPlatform, endpoint: CoapEndpoint, client: aiocoap.Context
) -> None:
    answers = await asyncio.gather(
        *(
            post(client, endpoint, "devices", f"c-{i % 10}", "telemetry", body={"n": i})
            for i in range(40)
        )
    )
    assert [a.code for a in answers] == [Code.CHANGED] * 40
    assert endpoint.stats["messages"] == 40
    assert endpoint.stats["batches"] <= 40
    for i in range(10):
        assert "n" in (await fleet.host.get(f"c-{i}"))["reported"]


async def test_a_batch_takes_one_request_per_device_and_names_its_rejection() -> None:
    batches: list[list[str]] = []

    async def ingest(messages: list[DeviceMessage]) -> tuple[int, list[Rejection]]:
        batches.append([f"{m.device_id}:{m.payload['n']}" for m in messages])
        refused = [
            Rejection(m.device_id, "invalid_patch", "no") for m in messages if m.payload["n"] < 0
        ]
        return len(messages) - len(refused), refused

    batcher = _Batcher(ingest, window_s=0.01, max_messages=100, stats=collections.Counter())
    running = asyncio.create_task(batcher.run())
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(
                batcher.submit("a", [DeviceMessage("a", "telemetry", {"n": 1})]),
                batcher.submit("a", [DeviceMessage("a", "telemetry", {"n": -2})]),
                batcher.submit("b", [DeviceMessage("b", "telemetry", {"n": 3})]),
            ),
            WAIT,
        )
    finally:
        running.cancel()
    assert batches == [["a:1", "b:3"], ["a:-2"]]
    assert [a.code if a else None for a in answers] == [None, "invalid_patch", None]


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method", "payload", "content_format", "code", "error", "device"),
    [
        pytest.param(
            ("devices", "e-1", "telemetry"),
            Code.POST,
            b'{"temperature": 21.',
            JSON,
            Code.BAD_REQUEST,
            "malformed_payload",
            "e-1",
            id="malformed-json",
        ),
        pytest.param(
            ("devices", "e-1", "telemetry"),
            Code.POST,
            b"\xa1\x61",
            CBOR,
            Code.BAD_REQUEST,
            "malformed_payload",
            "e-1",
            id="truncated-cbor",
        ),
        pytest.param(
            ("devices", "e-1", "reported"),
            Code.POST,
            b"[1, 2]",
            JSON,
            Code.BAD_REQUEST,
            "malformed_payload",
            "e-1",
            id="reported-not-an-object",
        ),
        pytest.param(
            ("devices", "bad id!", "telemetry"),
            Code.POST,
            b'{"temperature": 1}',
            JSON,
            Code.NOT_FOUND,
            "invalid_device_id",
            "bad id!",
            id="invalid-device-id",
        ),
        pytest.param(
            ("devices", "e-1", "nothing"),
            Code.POST,
            b"{}",
            JSON,
            Code.NOT_FOUND,
            "unknown_resource",
            "e-1",
            id="unknown-path",
        ),
        pytest.param(
            ("elsewhere",),
            Code.GET,
            b"",
            None,
            Code.NOT_FOUND,
            "unknown_resource",
            "",
            id="unknown-root",
        ),
        pytest.param(
            ("devices", "e-1", "telemetry"),
            Code.POST,
            b"temperature=21.5",
            TEXT,
            Code.UNSUPPORTED_CONTENT_FORMAT,
            "unsupported_format",
            "e-1",
            id="text-plain",
        ),
        pytest.param(
            ("devices", "e-1", "reported"),
            Code.POST,
            b'[{"n": "x", "v": 1}]',
            SENML_JSON,
            Code.UNSUPPORTED_CONTENT_FORMAT,
            "unsupported_format",
            "e-1",
            id="senml-reported",
        ),
        pytest.param(
            ("devices", "e-1", "telemetry"),
            Code.GET,
            b"",
            None,
            Code.METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "e-1",
            id="wrong-method",
        ),
        pytest.param(
            ("devices", "e-1", "desired"),
            Code.GET,
            b"",
            None,
            Code.NOT_FOUND,
            "twin_not_found",
            "e-1",
            id="desired-of-no-twin",
        ),
    ],
)
async def test_each_refusal_answers_and_is_recorded(
    fleet: InProcessPlatform,
    endpoint: CoapEndpoint,
    client: aiocoap.Context,
    path: tuple[str, ...],
    method: Code,
    payload: bytes,
    content_format: int | None,
    code: Code,
    error: str,
    device: str,
) -> None:
    msg = message(endpoint, method, *path, payload=payload, content_format=content_format)
    answer = await send(client, msg)
    assert answer.code == code
    assert answer.payload.decode().startswith(f"{error}: ")
    [event] = await rejections(fleet)
    assert (event.twin_id, event.data["code"], event.data["protocol"]) == (device, error, "coap")
    assert endpoint.stats[f"rejected:{error}"] == 1


async def test_a_body_over_128_kb_is_refused_with_4_13(
    fleet: InProcessPlatform, endpoint: CoapEndpoint, client: aiocoap.Context
) -> None:
    payload = orjson.dumps({"blob": "x" * (130 * 1024)})
    answer = await post(client, endpoint, "devices", "big-1", "telemetry", body=payload)
    assert answer.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert answer.opt.size1 == 128 * 1024
    [event] = await rejections(fleet)
    assert (event.twin_id, event.data["code"]) == ("big-1", "payload_too_large")
    # refused at the first block (which declares Size1), not after 130 blocks were sent
    assert endpoint.stats["requests"] == 1
    # the endpoint still serves the same device afterwards
    answer = await post(client, endpoint, "devices", "big-1", "telemetry", body={"t": 1})
    assert answer.code == Code.CHANGED


async def test_a_block_beyond_128_kb_is_refused_without_a_size1(
    fleet: InProcessPlatform, endpoint: CoapEndpoint, client: aiocoap.Context
) -> None:
    msg = message(endpoint, Code.POST, "devices", "big-2", "telemetry", payload=b"x" * 1024)
    msg.opt.block1 = BlockOption.BlockwiseTuple(128, True, 6)  # bytes 131072.. of a body
    answer = await asyncio.wait_for(client.request(msg, handle_blockwise=False).response, WAIT)
    assert answer.code == Code.REQUEST_ENTITY_TOO_LARGE
    [event] = await rejections(fleet)
    assert (event.twin_id, event.data["code"]) == ("big-2", "payload_too_large")


async def test_a_message_the_twin_refuses_is_a_rejected_event(
    fleet: InProcessPlatform, endpoint: CoapEndpoint, client: aiocoap.Context
) -> None:
    # The edge accepts what decodes; the twin's own limits are checked where the twin lives,
    # asynchronously (as with the Ray runtime), and refusals become rejected events.
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(12):
        deep = {"level": deep}
    answer = await post(client, endpoint, "devices", "d-1", "reported", body=deep)
    assert answer.code == Code.CHANGED
    [event] = await rejections(fleet)
    assert (event.twin_id, event.data["code"]) == ("d-1", "nesting_too_deep")


# -- desired state out ----------------------------------------------------------------------------


async def test_get_desired_in_json_and_cbor(
    fleet: InProcessPlatform, endpoint: CoapEndpoint, client: aiocoap.Context
) -> None:
    await post(client, endpoint, "devices", "g-1", "reported", body={"interval": 10})
    await fleet.host.patch_desired("g-1", {"interval": 30})
    answer = await get(client, endpoint, "devices", "g-1", "desired")
    assert answer.code == Code.CONTENT
    assert answer.opt.content_format == JSON
    document = orjson.loads(answer.payload)
    assert document == {"version": 2, "desired": {"interval": 30}, "delta": {"interval": 30}}
    answer = await get(client, endpoint, "devices", "g-1", "desired", accept=CBOR)
    assert answer.code == Code.CONTENT
    assert answer.opt.content_format == CBOR
    assert cbor2.loads(answer.payload) == document
    answer = await get(client, endpoint, "devices", "g-1", "desired", accept=TEXT)
    assert answer.code == Code.NOT_ACCEPTABLE


async def test_an_observer_of_desired_is_notified(
    fleet: InProcessPlatform, endpoint: CoapEndpoint, client: aiocoap.Context
) -> None:
    await fleet.host.patch_desired("o-1", {"interval": 30})
    request = client.request(message(endpoint, Code.GET, "devices", "o-1", "desired", observe=0))
    first = await asyncio.wait_for(request.response, WAIT)
    assert first.code == Code.CONTENT
    assert first.opt.observe is not None
    assert orjson.loads(first.payload)["desired"] == {"interval": 30}
    notifications = aiter(request.observation)
    await fleet.host.patch_desired("o-1", {"interval": 60, "mode": "eco"})
    notice = await asyncio.wait_for(anext(notifications), WAIT)
    document = orjson.loads(notice.payload)
    assert document["desired"] == {"interval": 60, "mode": "eco"}
    assert document["version"] == 2
    assert endpoint.stats["notifications"] >= 1
    request.observation.cancel()


async def test_an_observed_document_bigger_than_a_datagram_arrives_whole(
    fleet: InProcessPlatform, endpoint: CoapEndpoint, client: aiocoap.Context
) -> None:
    desired = {f"setting_{i:03d}": "v" * 40 for i in range(150)}  # ~ 8 KB of JSON
    await fleet.host.patch_desired("o-2", desired)
    request = client.request(message(endpoint, Code.GET, "devices", "o-2", "desired", observe=0))
    first = await asyncio.wait_for(request.response, WAIT)
    assert orjson.loads(first.payload)["desired"] == desired
    notifications = aiter(request.observation)
    await fleet.host.patch_desired("o-2", {"setting_000": "changed"})
    notice = await asyncio.wait_for(anext(notifications), WAIT)
    assert orjson.loads(notice.payload)["desired"] == {**desired, "setting_000": "changed"}
    request.observation.cancel()


# -- commands -------------------------------------------------------------------------------------


async def claimed_commands(client: aiocoap.Context, endpoint: CoapEndpoint, device: str) -> Any:
    answer = await get(client, endpoint, "devices", device, "commands")
    assert answer.code == Code.CONTENT
    return orjson.loads(answer.payload) or None


async def test_a_sleeping_device_gets_its_command_and_answers_it(
    fleet: InProcessPlatform, endpoint: CoapEndpoint, client: aiocoap.Context
) -> None:
    await post(client, endpoint, "devices", "k-1", "telemetry", body={"temperature": 20})
    assert await claimed_commands(client, endpoint, "k-1") is None
    sending = asyncio.create_task(
        fleet.host.send_command("k-1", {"name": "ping", "params": {"n": 1}, "timeout_s": 5})
    )
    [command] = await eventually(
        lambda: claimed_commands(client, endpoint, "k-1"),
        WAIT,
        what="the command to be queued",
        retry_errors=False,
    )
    assert command["name"] == "ping"
    assert command["params"] == {"n": 1}
    assert set(command) == {"id", "name", "params", "expires_at"}
    assert await claimed_commands(client, endpoint, "k-1") is None  # claimed once only
    answer = await post(
        client,
        endpoint,
        "devices",
        "k-1",
        "commands",
        command["id"],
        body={"status": "ok", "result": {"pong": True}},
    )
    assert answer.code == Code.CHANGED, answer.payload
    record = await asyncio.wait_for(sending, WAIT)
    assert record["status"] == "succeeded"
    assert record["result"] == {"pong": True}
    assert endpoint.stats["responses"] == 1


async def test_command_responses_that_are_refused(
    fleet: InProcessPlatform, endpoint: CoapEndpoint, client: aiocoap.Context
) -> None:
    await post(client, endpoint, "devices", "k-2", "telemetry", body={"temperature": 20})
    answer = await post(
        client, endpoint, "devices", "k-2", "commands", "no-such", body={"status": "ok"}
    )
    assert answer.code == Code.NOT_FOUND
    answer = await post(
        client, endpoint, "devices", "k-2", "commands", "no-such", body={"status": "maybe"}
    )
    assert answer.code == Code.BAD_REQUEST
    codes = [e.data["code"] for e in await rejections(fleet)]
    assert codes == ["command_not_found", "malformed_payload"]


async def test_an_observer_of_commands_is_notified_of_a_new_command(
    fleet: InProcessPlatform, endpoint: CoapEndpoint, client: aiocoap.Context
) -> None:
    await post(client, endpoint, "devices", "k-3", "telemetry", body={"temperature": 20})
    request = client.request(message(endpoint, Code.GET, "devices", "k-3", "commands", observe=0))
    first = await asyncio.wait_for(request.response, WAIT)
    assert first.code == Code.CONTENT
    assert orjson.loads(first.payload) == []
    assert endpoint.observers == 1
    notifications = aiter(request.observation)
    sending = asyncio.create_task(
        fleet.host.send_command("k-3", {"name": "reboot", "timeout_s": 5})
    )
    notice = await asyncio.wait_for(anext(notifications), WAIT)
    [command] = orjson.loads(notice.payload)
    assert command["name"] == "reboot"
    answer = await post(
        client,
        endpoint,
        "devices",
        "k-3",
        "commands",
        command["id"],
        body={"status": "error", "error": "busy"},
    )
    assert answer.code == Code.CHANGED
    record = await asyncio.wait_for(sending, WAIT)
    assert (record["status"], record["error"]) == ("failed", "busy")
    request.observation.cancel()


async def test_the_endpoint_binds_a_free_port_and_closes() -> None:
    fleet = InProcessPlatform.create()
    try:
        async with CoapEndpoint(fleet, port=0) as first, CoapEndpoint(fleet, port=0) as second:
            assert first.port != 0
            assert second.port not in (0, first.port)
    finally:
        await fleet.host.stop()


# -- the Ray runtime ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
async def test_a_device_conversation_through_the_ray_runtime(
    sqlite_url: str, client: aiocoap.Context
) -> None:
    runtime = Runtime(store=sqlite_url, settings=RuntimeSettings(hosts=2))
    try:
        async with CoapEndpoint(RayPlatform(runtime), port=0) as endpoint:
            answer = await post(
                client, endpoint, "devices", "ray-1", "telemetry", body={"temperature": 21.5}
            )
            assert answer.code == Code.CHANGED, answer.payload
            answer = await post(
                client, endpoint, "devices", "ray-1", "reported", body={"mode": "eco"}
            )
            assert answer.code == Code.CHANGED, answer.payload

            async def landed() -> dict[str, Any] | None:
                doc: dict[str, Any] = await asyncio.to_thread(runtime.twin("ray-1").get)
                return doc if doc["reported"].get("mode") == "eco" else None

            doc = await eventually(
                landed, WAIT, what="the messages to reach the twin", retry_errors=False
            )
            assert doc["reported"] == {"temperature": 21.5, "mode": "eco"}
            assert doc["connectivity"]["protocol"] == "coap"

            await asyncio.to_thread(runtime.twin("ray-1").patch_desired, {"mode": "turbo"})
            answer = await get(client, endpoint, "devices", "ray-1", "desired")
            assert orjson.loads(answer.payload)["delta"] == {"mode": "turbo"}

            sending = asyncio.create_task(
                asyncio.to_thread(runtime.send_command, "ray-1", "ping", timeout_s=10)
            )
            [command] = await eventually(
                lambda: claimed_commands(client, endpoint, "ray-1"),
                WAIT,
                what="the command to be queued",
                retry_errors=False,
            )
            answer = await post(
                client,
                endpoint,
                "devices",
                "ray-1",
                "commands",
                command["id"],
                body={"status": "ok", "result": "pong"},
            )
            assert answer.code == Code.CHANGED, answer.payload
            record = await asyncio.wait_for(sending, WAIT + 5)
            assert (record["status"], record["result"]) == ("succeeded", "pong")
    finally:
        await asyncio.to_thread(runtime.close)
