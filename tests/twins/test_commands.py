"""Command requests, records and their lifecycle on a twin."""

from __future__ import annotations

import pytest

from twinfleet.errors import Conflict, InvalidRequest
from twinfleet.twins import CommandRequest, Twin, UnknownCommand
from twinfleet.twins.commands import MAX_FINISHED_COMMANDS

T0 = 1_800_000_000.0


def twin_with(*names: str) -> Twin:
    twin = Twin("dev-1", now=T0)
    for i, name in enumerate(names):
        twin.add_command(CommandRequest(name, ttl_s=60), f"c{i}", now=T0)
    return twin


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "ok", "params": [1]}, "params"),
        ({"name": "ok", "params": {"x": float("nan")}}, "params.x"),
        ({"name": "ok", "timeout_s": -1}, "timeout_s"),
        ({"name": "ok", "timeout_s": 301}, "timeout_s"),
        ({"name": "ok", "timeout_s": True}, "timeout_s"),
        ({"name": "ok", "ttl_s": 0.5}, "ttl_s"),
    ],
)
def test_requests_are_checked(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        CommandRequest(**kwargs)
    assert caught.value.field == field


def test_request_params_are_a_private_copy() -> None:
    params = {"seconds": 5}
    request = CommandRequest("set_interval", params)
    params["seconds"] = 9
    assert request.record("c", now=T0)["params"] == {"seconds": 5}


def test_lifecycle_queued_sent_succeeded() -> None:
    twin = twin_with("ping")
    assert twin.pending_commands() == 1
    [claimed] = twin.claim_commands(None, now=T0 + 1)
    assert (claimed["status"], claimed["sent_at"]) == ("sent", T0 + 1)
    assert twin.claim_commands(None, now=T0 + 1) == []
    assert twin.answer_command("c0", {"status": "ok", "result": 7}, now=T0 + 2)
    record = twin.command("c0")
    assert (record["status"], record["result"], record["completed_at"]) == ("succeeded", 7, T0 + 2)
    assert not twin.answer_command("c0", {"status": "error"}, now=T0 + 3)  # final stays final
    assert twin.version == 0  # commands are not twin state


def test_error_answer_fails_the_command() -> None:
    twin = twin_with("reboot")
    twin.answer_command("c0", {"status": "error"}, now=T0)
    assert twin.command("c0")["status"] == "failed"
    assert twin.command("c0")["error"] == "the device reported an error"


def test_expiry_and_timeout() -> None:
    twin = twin_with("a", "b")
    twin.claim_commands({"c1"}, now=T0)
    assert twin.expire_commands(now=T0 + 59) == []
    changed = twin.expire_commands(now=T0 + 60)
    assert [(r["id"], r["status"]) for r in changed] == [("c0", "expired"), ("c1", "timed_out")]
    assert twin.claim_commands(None, now=T0 + 61) == []


def test_claiming_an_expired_command_expires_it() -> None:
    twin = twin_with("a")
    assert twin.claim_commands(None, now=T0 + 61) == []
    assert twin.command("c0")["status"] == "expired"


def test_only_recent_finished_commands_are_kept() -> None:
    twin = twin_with(*["x"] * (MAX_FINISHED_COMMANDS + 5))
    for i in range(MAX_FINISHED_COMMANDS + 5):
        twin.answer_command(f"c{i}", {"status": "ok"}, now=T0)
    twin.add_command(CommandRequest("y"), "new", now=T0)
    assert twin.commands is not None
    assert len(twin.commands) == MAX_FINISHED_COMMANDS + 1
    assert "c0" not in twin.commands
    assert twin.command("new")["status"] == "queued"


def test_unknown_and_duplicate_ids() -> None:
    twin = twin_with("a")
    with pytest.raises(UnknownCommand):
        twin.command("zzz")
    with pytest.raises(Conflict, match="taken"):
        twin.add_command(CommandRequest("b"), "c0", now=T0)


def test_commands_survive_a_snapshot() -> None:
    twin = twin_with("a", "b")
    twin.claim_commands({"c1"}, now=T0)
    back = Twin.from_snapshot(twin.snapshot())
    assert back.commands == twin.commands
    assert back.pending_commands() == 1
