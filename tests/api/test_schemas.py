"""The API's request bodies say what the domain's rules say (no Ray, no server)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from twinfleet.api.schemas import AlarmRuleIn, AlarmRulesIn, CommandIn, DeviceIn
from twinfleet.errors import InvalidDeviceId, InvalidRequest
from twinfleet.twins import validate_device_id
from twinfleet.twins.alarms import MAX_ALARM_RULES, MAX_RULE_NAME, MAX_STREAK, AlarmRule
from twinfleet.twins.commands import TIMEOUT_S_RANGE, TTL_S_RANGE, CommandRequest


def test_an_alarm_rule_body_has_the_rule_s_fields_and_defaults() -> None:
    body = AlarmRuleIn(name="r")
    assert list(AlarmRuleIn.model_fields) == [f.name for f in dataclasses.fields(AlarmRule)]
    assert AlarmRule(**body.model_dump()) == AlarmRule("r")


def test_alarm_rule_bounds_are_the_rule_s_own() -> None:
    schema = AlarmRuleIn.model_json_schema()["properties"]
    assert schema["name"]["maxLength"] == MAX_RULE_NAME
    assert schema["raise_after"]["maximum"] == schema["clear_after"]["maximum"] == MAX_STREAK
    assert schema["op"]["anyOf"][0]["enum"] == ["<", "<=", ">", ">="]
    too_many = [{"name": f"r{i}"} for i in range(MAX_ALARM_RULES + 1)]
    with pytest.raises(ValidationError):
        AlarmRulesIn.model_validate({"rules": too_many})
    with pytest.raises(InvalidRequest, match="raise_after"):
        AlarmRule("r", raise_after=MAX_STREAK + 1)  # the rule refuses what the body does
    with pytest.raises(InvalidRequest, match="at most 64"):
        AlarmRule("r" * (MAX_RULE_NAME + 1))


def test_a_family_s_rules_are_checked_by_the_domain_with_its_errors() -> None:
    with pytest.raises(InvalidRequest, match="needs metric, op"):
        AlarmRulesIn.model_validate({"rules": [{"name": "x", "kind": "threshold", "metric": "t"}]})
    with pytest.raises(InvalidRequest, match="unique"):
        AlarmRulesIn.model_validate({"rules": [{"name": "x"}, {"name": "x"}]})
    hot = {"name": "hot", "kind": "threshold", "metric": "t", "op": ">", "value": 50}
    assert AlarmRulesIn.model_validate({"rules": [hot]}).documents()[0]["raise_after"] == 3


def test_a_command_body_has_the_request_s_defaults_and_bounds() -> None:
    body = CommandIn(name="ping")
    assert CommandRequest(**body.model_dump()) == CommandRequest("ping")
    schema = CommandIn.model_json_schema()["properties"]
    assert (schema["timeout_s"]["minimum"], schema["timeout_s"]["maximum"]) == TIMEOUT_S_RANGE
    assert (schema["ttl_s"]["minimum"], schema["ttl_s"]["maximum"]) == TTL_S_RANGE


@given(st.text(max_size=140) | st.from_regex(r"[A-Za-z0-9._:-]{1,130}", fullmatch=True))
def test_a_device_body_takes_exactly_the_valid_device_ids(device_id: str) -> None:
    try:
        validate_device_id(device_id)
        valid = True
    except InvalidDeviceId:
        valid = False
    try:
        DeviceIn(id=device_id)
        taken = True
    except ValidationError:
        taken = False
    assert taken == valid
