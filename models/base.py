"""The anomaly model slot every twin has: a small protocol and a registry of models by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from twinfleet.twins.errors import UnknownModel

__all__ = ["AnomalyModel", "ModelRegistry", "ModelSpec", "Verdict"]


class Verdict(NamedTuple):
    """What a model says about one reading: how unusual it is, and whether that is an anomaly."""

    score: float
    anomalous: bool
    metric: str | None = None


@runtime_checkable
class AnomalyModel(Protocol):
    """A streaming anomaly model for one twin.

    ``update`` scores a reading (numeric metrics by name) and then learns from it. ``state``
    returns JSON-ready data from which the registry rebuilds an equal model, so the model
    survives passivation and restarts as part of the twin's snapshot.
    """

    name: str

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        """Score ``values`` measured at ``ts``, then learn from them."""
        ...

    def state(self) -> dict[str, Any]:
        """JSON-ready state from which :meth:`ModelSpec.restore` rebuilds this model."""
        ...


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How to make a model by name: from parameters, or back from saved state."""

    name: str
    create: Callable[[Mapping[str, Any]], AnomalyModel]
    restore: Callable[[Mapping[str, Any]], AnomalyModel]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a model spec needs a name")


class ModelRegistry:
    """Models known by name. Each host owns one; there is no process-wide mutable registry."""

    def __init__(self, specs: tuple[ModelSpec, ...] = ()) -> None:
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: ModelSpec) -> None:
        """Add ``spec``; a name can be registered once."""
        if spec.name in self._specs:
            raise ValueError(f"a model named {spec.name!r} is already registered")
        self._specs[spec.name] = spec

    def spec(self, name: str) -> ModelSpec:
        """The spec called ``name``, or :class:`UnknownModel`."""
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs)) or "none"
            raise UnknownModel(
                f"no anomaly model named {name!r} (known: {known})", field="model"
            ) from None

    def create(self, name: str, params: Mapping[str, Any] | None = None) -> AnomalyModel:
        """A new model ``name`` with ``params``."""
        return self.spec(name).create(params or {})

    def restore(self, name: str, state: Mapping[str, Any]) -> AnomalyModel:
        """The model ``name`` rebuilt from what its ``state()`` returned."""
        return self.spec(name).restore(state)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._specs))
