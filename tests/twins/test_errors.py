"""Typed errors: stable codes, the contract's error object, and pickling across processes."""

from __future__ import annotations

import pickle

import pytest

from twinfleet.twins import (
    DocumentTooLarge,
    InvalidDeviceId,
    InvalidPatch,
    InvalidTimestamp,
    NestingTooDeep,
    PayloadTooLarge,
    StoreUnavailable,
    TwinfleetError,
    TwinNotFound,
    UnknownModel,
    VersionConflict,
)

EXPECTED_CODES = {
    TwinfleetError: "twinfleet_error",
    TwinNotFound: "twin_not_found",
    VersionConflict: "version_conflict",
    InvalidDeviceId: "invalid_device_id",
    InvalidPatch: "invalid_patch",
    InvalidTimestamp: "invalid_timestamp",
    PayloadTooLarge: "payload_too_large",
    DocumentTooLarge: "document_too_large",
    NestingTooDeep: "nesting_too_deep",
    UnknownModel: "unknown_model",
    StoreUnavailable: "store_unavailable",
}

ERRORS = [
    TwinfleetError("something failed"),
    TwinNotFound("pump-7"),
    VersionConflict("pump-7", 3, 5),
    InvalidDeviceId("bad id", field="id"),
    InvalidPatch("desired.a is nan", field="desired.a"),
    InvalidTimestamp("not a time", field="ts"),
    PayloadTooLarge("too big", field="payload"),
    DocumentTooLarge("too big", field="reported"),
    NestingTooDeep("too deep", field="desired"),
    UnknownModel("no such model", field="model"),
    StoreUnavailable("redis is down"),
]


def roundtrip(err: TwinfleetError) -> TwinfleetError:
    return pickle.loads(pickle.dumps(err))


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__name__)
def test_pickle_round_trip_keeps_type_code_message_and_field(err: TwinfleetError) -> None:
    back = roundtrip(err)

    assert type(back) is type(err)
    assert back.code == err.code
    assert back.message == err.message
    assert back.field == err.field
    assert str(back) == str(err)
    assert back.to_dict() == err.to_dict()


def test_pickle_round_trip_keeps_twin_not_found_twin_id() -> None:
    back = roundtrip(TwinNotFound("pump-7"))

    assert isinstance(back, TwinNotFound)
    assert back.twin_id == "pump-7"
    assert back.field == "id"


def test_pickle_round_trip_keeps_version_conflict_versions() -> None:
    back = roundtrip(VersionConflict("pump-7", 3, 5))

    assert isinstance(back, VersionConflict)
    assert (back.twin_id, back.expected, back.actual) == ("pump-7", 3, 5)
    assert back.field == "version"


def test_unpickled_error_can_still_be_raised_and_caught_by_base_class() -> None:
    back = roundtrip(VersionConflict("pump-7", 1, 2))

    with pytest.raises(TwinfleetError, match="at version 2, not the expected 1"):
        raise back


@pytest.mark.parametrize(("cls", "code"), EXPECTED_CODES.items(), ids=list(EXPECTED_CODES.values()))
def test_each_error_has_its_stable_code(cls: type[TwinfleetError], code: str) -> None:
    assert cls.code == code


def test_codes_are_unique() -> None:
    assert len(set(EXPECTED_CODES.values())) == len(EXPECTED_CODES)


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__name__)
def test_every_error_is_a_twinfleet_error(err: TwinfleetError) -> None:
    assert isinstance(err, TwinfleetError)
    assert isinstance(err, Exception)


def test_to_dict_is_the_contract_error_object() -> None:
    err = InvalidPatch("desired.a is nan, not a finite number", field="desired.a")

    assert err.to_dict() == {
        "code": "invalid_patch",
        "message": "desired.a is nan, not a finite number",
        "field": "desired.a",
    }


def test_field_defaults_to_none() -> None:
    assert StoreUnavailable("down").to_dict()["field"] is None


def test_messages_name_the_twin_and_versions() -> None:
    assert "'pump-7'" in TwinNotFound("pump-7").message
    conflict = VersionConflict("pump-7", 3, 5)
    assert "'pump-7'" in conflict.message
    assert "version 5" in conflict.message
    assert "expected 3" in conflict.message
