"""The anomaly model slot every twin has: a small protocol and a registry of models by name.

A model is any object with ``name``, ``update`` (score a reading, then learn from it) and
``state`` (JSON-ready, to be saved in the twin's snapshot); a model that can learn from history
in one go also has ``fit``. A :class:`ModelSpec` says how to make one from parameters and how to
bring it back from its state, which metrics it reads and which parameters it takes. Models are
found by name in a :class:`ModelRegistry`: the built-ins, and those other packages declare in
the entry-point group ``twinfleet.models`` (each entry point names a ``ModelSpec``)::

    [project.entry-points."twinfleet.models"]
    level = "my_package.models:LEVEL_SPEC"
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from importlib.metadata import entry_points
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from twinfleet.twins.errors import UnknownModel

__all__ = [
    "ENTRY_POINT_GROUP",
    "AnomalyModel",
    "ModelRegistry",
    "ModelSpec",
    "Reading",
    "SelectedInputs",
    "TrainableModel",
    "Verdict",
    "parameters",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "twinfleet.models"

P = TypeVar("P")

Reading = tuple[float, Mapping[str, float]]
"""One reading of history: its time (Unix seconds) and numeric metrics by name."""


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


@runtime_checkable
class TrainableModel(AnomalyModel, Protocol):
    """A model that can also learn from a stretch of history at once (before streaming)."""

    def fit(self, history: Sequence[Reading]) -> None:
        """Learn from ``history`` (oldest first), replacing what was learnt so far."""
        ...


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How to make a model by name: from parameters, or back from saved state.

    ``params`` are the parameters ``create`` accepts, with their defaults (documentation for
    users and the API); ``inputs`` the metrics the model reads (empty: every numeric metric);
    ``version`` changes when the model's behaviour or state format does.
    """

    name: str
    create: Callable[[Mapping[str, Any]], AnomalyModel]
    restore: Callable[[Mapping[str, Any]], AnomalyModel]
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    version: str = "1"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a model spec needs a name")

    def describe(self) -> dict[str, Any]:
        """The spec as JSON-ready data (for the API and the CLI)."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "params": dict(self.params),
            "inputs": list(self.inputs),
        }


class ModelRegistry:
    """Models known by name. Each host owns one; there is no process-wide mutable registry."""

    def __init__(self, specs: tuple[ModelSpec, ...] = ()) -> None:
        self._specs: dict[str, ModelSpec] = {}
        self.plugin_errors: dict[str, str] = {}  # entry point -> why it was not loaded
        for spec in specs:
            self.register(spec)

    def load_plugins(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register the models installed packages declare in ``group``; their names.

        A plugin that fails to load (import error, not a ``ModelSpec``, a taken name) is
        skipped, logged and kept in ``plugin_errors``: one broken package must not stop hosts.
        """
        loaded = []
        for point in entry_points(group=group):
            try:
                spec = point.load()
                if callable(spec) and not isinstance(spec, ModelSpec):
                    spec = spec()
                if not isinstance(spec, ModelSpec):
                    raise TypeError(f"{point.value} is a {type(spec).__name__}, not a ModelSpec")
                self.register(spec)
            except Exception as err:  # a third party's bug, reported, never raised here
                self.plugin_errors[point.name] = f"{type(err).__name__}: {err}"
                log.warning("anomaly model plugin %r not loaded: %s", point.name, err)
                continue
            loaded.append(spec.name)
        return loaded

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
        """A new model ``name`` with ``params`` (seeing only its declared inputs)."""
        spec = self.spec(name)
        return _with_inputs(spec, spec.create(params or {}))

    def restore(self, name: str, state: Mapping[str, Any]) -> AnomalyModel:
        """The model ``name`` rebuilt from what its ``state()`` returned."""
        spec = self.spec(name)
        return _with_inputs(spec, spec.restore(state))

    def specs(self) -> list[ModelSpec]:
        """Every spec, by name."""
        return [self._specs[name] for name in sorted(self._specs)]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._specs))


class SelectedInputs:
    """A model that is shown only the metrics its spec declares.

    A reading with none of them leaves the verdict as it was (the model has nothing to say).
    """

    __slots__ = ("_last", "inputs", "model", "name")

    def __init__(self, model: AnomalyModel, inputs: frozenset[str]) -> None:
        self.model = model
        self.inputs = inputs
        self.name = model.name
        self._last = Verdict(0.0, False, None)

    def update(self, values: Mapping[str, float], ts: float) -> Verdict:
        """Score the declared metrics of ``values``."""
        picked = {k: v for k, v in values.items() if k in self.inputs}
        if picked:
            self._last = self.model.update(picked, ts)
        return self._last

    def state(self) -> dict[str, Any]:
        """The wrapped model's state."""
        return self.model.state()

    def fit(self, history: Sequence[Reading]) -> None:
        """Fit the wrapped model on the declared metrics (if it can be fitted)."""
        if not isinstance(self.model, TrainableModel):
            raise TypeError(f"model {self.name!r} cannot be fitted")
        self.model.fit(
            [(ts, {k: v for k, v in values.items() if k in self.inputs}) for ts, values in history]
        )


def _with_inputs(spec: ModelSpec, model: AnomalyModel) -> AnomalyModel:
    return SelectedInputs(model, frozenset(spec.inputs)) if spec.inputs else model


def parameters(kind: type[P], params: Mapping[str, Any], model: str) -> P:
    """A model's parameter dataclass from a plain mapping, naming unknown keys clearly."""
    assert is_dataclass(kind)
    unknown = set(params) - {f.name for f in fields(kind)}
    if unknown:
        raise ValueError(f"unknown {model} parameters: {', '.join(sorted(unknown))}")
    return kind(**params)
