"""The model registry: models by name, created from params or restored from state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from twinfleet.models import (
    EWMA_SPEC,
    AnomalyModel,
    EwmaZScore,
    ModelRegistry,
    ModelSpec,
    Verdict,
    default_registry,
)
from twinfleet.twins import UnknownModel


class ConstantModel:
    """A model that always says the same thing."""

    name = "constant"

    def __init__(self, score: float) -> None:
        self.score = score

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        return Verdict(self.score, self.score > 1.0, None)

    def state(self) -> dict[str, Any]:
        return {"score": self.score}


CONSTANT_SPEC = ModelSpec(
    name="constant",
    create=lambda params: ConstantModel(float(params.get("score", 0.0))),
    restore=lambda state: ConstantModel(float(state["score"])),
)


def test_default_registry_knows_the_built_ins() -> None:
    registry = default_registry(plugins=False)
    assert "ewma" in registry
    assert list(registry) == ["combined", "ewma", "mad", "mahalanobis", "sklearn", "stuck"]
    assert registry.spec("ewma").describe()["params"]["threshold"] == 5.0


def test_default_registries_are_independent() -> None:
    one = default_registry()
    one.register(CONSTANT_SPEC)
    assert "constant" not in default_registry()


def test_registry_lists_names_sorted() -> None:
    registry = ModelRegistry((EWMA_SPEC, CONSTANT_SPEC))
    assert list(registry) == ["constant", "ewma"]
    assert "missing" not in registry


def test_registering_a_name_twice_fails() -> None:
    registry = default_registry()
    with pytest.raises(ValueError, match="a model named 'ewma' is already registered"):
        registry.register(EWMA_SPEC)


def test_building_a_registry_with_duplicate_specs_fails() -> None:
    with pytest.raises(ValueError, match="already registered"):
        ModelRegistry((EWMA_SPEC, EWMA_SPEC))


def test_unknown_model_names_the_known_ones() -> None:
    registry = ModelRegistry((EWMA_SPEC, CONSTANT_SPEC))
    with pytest.raises(
        UnknownModel, match=r"no anomaly model named 'iforest' \(known: constant, ewma\)"
    ):
        registry.create("iforest")


def test_unknown_model_on_restore_and_spec() -> None:
    registry = default_registry()
    with pytest.raises(
        UnknownModel, match=r"known: combined, ewma, (level, )?mad, mahalanobis, sklearn, stuck"
    ) as info:
        registry.restore("iforest", {})
    assert info.value.field == "model"
    assert info.value.code == "unknown_model"
    with pytest.raises(UnknownModel, match="'x'"):
        registry.spec("x")


def test_empty_registry_says_it_knows_none() -> None:
    with pytest.raises(UnknownModel, match=r"\(known: none\)"):
        ModelRegistry().create("ewma")


def test_create_makes_a_fresh_model_with_params() -> None:
    registry = default_registry()
    model = registry.create("ewma")
    assert isinstance(model, EwmaZScore)
    assert model.state() == {"metrics": {}}
    tuned = registry.create("ewma", {"warmup": 3})
    assert tuned.state()["params"]["warmup"] == 3


def test_restore_rebuilds_from_state() -> None:
    registry = default_registry()
    model = registry.create("ewma", {"warmup": 2})
    for i in range(5):
        model.update({"t": float(i)}, float(i))
    restored = registry.restore("ewma", model.state())
    assert restored.state() == model.state()
    assert restored.update({"t": 9.0}, 9.0) == model.update({"t": 9.0}, 9.0)


def test_custom_spec_creates_and_restores() -> None:
    registry = ModelRegistry((CONSTANT_SPEC,))
    model = registry.create("constant", {"score": 2.0})
    assert isinstance(model, AnomalyModel)
    assert model.update({"t": 1.0}, 0.0) == Verdict(2.0, True, None)
    assert registry.restore("constant", model.state()).update({}, 0.0).score == 2.0


def test_spec_returns_the_registered_spec() -> None:
    assert default_registry().spec("ewma") is EWMA_SPEC


def test_model_spec_needs_a_name() -> None:
    with pytest.raises(ValueError, match="a model spec needs a name"):
        ModelSpec(name="", create=EwmaZScore.create, restore=EwmaZScore.from_state)
