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

import hashlib
import logging
import pickle
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from importlib.metadata import entry_points
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from twinfleet.errors import InvalidRequest, TwinfleetError, UnknownModel

__all__ = [
    "ENTRY_POINT_GROUP",
    "AnomalyModel",
    "ArtifactBackend",
    "BatchScoring",
    "MemoryArtifacts",
    "ModelArtifacts",
    "ModelRegistry",
    "ModelSpec",
    "Reading",
    "SelectedInputs",
    "TrainableModel",
    "Verdict",
    "is_trainable",
    "parameters",
    "prescore",
    "replay",
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


@runtime_checkable
class BatchScoring(Protocol):
    """A model whose readings a host scores many at a time (one numpy call per group).

    Models with equal ``batch_group`` (say, twins sharing one fitted estimator) are scored
    together by ``score_batch``; each then gets its verdict through ``prime`` and hands it out
    when ``update`` sees those same values. ``batch_group`` None: score one by one.
    """

    batch_group: Hashable | None

    def score_batch(self, readings: Sequence[Mapping[str, float]]) -> list[Verdict]:
        """Verdicts for ``readings`` (of any models of this group), in order, learning nothing."""
        ...

    def prime(self, values: Mapping[str, float], verdict: Verdict) -> None:
        """Keep ``verdict`` for the next ``update`` with these ``values``."""
        ...


def prescore(readings: Sequence[tuple[AnomalyModel, Mapping[str, float]]]) -> int:
    """Score the readings of batch-scoring models group by group, ahead of their updates.

    Other models are passed over. Returns how many readings were scored.
    """
    groups: dict[Hashable, list[tuple[BatchScoring, Mapping[str, float]]]] = {}
    for model, values in readings:
        group = getattr(model, "batch_group", None)
        if group is not None:
            groups.setdefault(group, []).append((model, values))  # type: ignore[arg-type]
    scored = 0
    for members in groups.values():
        verdicts = members[0][0].score_batch([values for _, values in members])
        for (member, values), verdict in zip(members, verdicts, strict=True):
            member.prime(values, verdict)
        scored += len(members)
    return scored


def replay(model: AnomalyModel, history: Sequence[Reading]) -> None:
    """Stream ``history`` (oldest first) through ``model``: how streaming models ``fit``."""
    for ts, values in history:
        if values:
            model.update(values, ts)


class ArtifactBackend(Protocol):
    """Where model artifacts live as bytes (the runtime keeps them in its state store)."""

    def load_artifact(self, artifact_id: str) -> bytes | None:
        """The bytes saved as ``artifact_id``, or None."""
        ...

    def save_artifact(self, artifact_id: str, blob: bytes) -> None:
        """Keep ``blob`` as ``artifact_id`` (the same id always carries the same bytes)."""
        ...


class MemoryArtifacts:
    """An in-process :class:`ArtifactBackend` (notebooks, tests, a single process)."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def load_artifact(self, artifact_id: str) -> bytes | None:
        """The bytes of ``artifact_id``, if saved here."""
        return self._blobs.get(artifact_id)

    def save_artifact(self, artifact_id: str, blob: bytes) -> None:
        """Keep ``blob``."""
        self._blobs[artifact_id] = blob


class ModelArtifacts:
    """The large fitted parts of models (a trained forest), kept once and shared by twins.

    A model's ``state`` names its artifact by id (the hash of its pickled bytes) instead of
    carrying it, so a family of 100,000 twins holds one estimator, not 100,000 copies, and
    their snapshots stay small. Artifacts are pickles: load them only from a backend you
    trust (the platform's own state store), as with any pickled scikit-learn model.
    """

    def __init__(self, backend: ArtifactBackend | None = None, *, cache: int = 32) -> None:
        self.backend: ArtifactBackend = backend if backend is not None else MemoryArtifacts()
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._size = cache

    def put(self, value: Any) -> str:
        """Save ``value``; its id."""
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        artifact_id = hashlib.sha256(blob).hexdigest()[:32]
        self.backend.save_artifact(artifact_id, blob)
        self._remember(artifact_id, value)
        return artifact_id

    def get(self, artifact_id: str) -> Any:
        """The value saved as ``artifact_id`` (one shared object per id); KeyError if none."""
        if artifact_id in self._cache:
            self._cache.move_to_end(artifact_id)
            return self._cache[artifact_id]
        blob = self.backend.load_artifact(artifact_id)
        if blob is None:
            raise KeyError(f"no model artifact {artifact_id!r}")
        value = pickle.loads(blob)  # noqa: S301 - our own store; see the class docstring
        self._remember(artifact_id, value)
        return value

    def _remember(self, artifact_id: str, value: Any) -> None:
        self._cache[artifact_id] = value
        self._cache.move_to_end(artifact_id)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How to make a model by name: from parameters, or back from saved state.

    ``params`` are the parameters ``create`` accepts, with their defaults (documentation for
    users and the API); ``inputs`` the metrics the model reads (empty: every numeric metric);
    ``version`` changes when the model's behaviour or state format does. ``pooled``: when a
    family is trained, one model fitted on the family's pooled readings serves all its twins
    (a static detector such as a forest); otherwise (models that go on learning each twin's
    own readings) every twin is fitted on its own history.
    """

    name: str
    create: Callable[[Mapping[str, Any]], AnomalyModel]
    restore: Callable[[Mapping[str, Any]], AnomalyModel]
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    version: str = "1"
    pooled: bool = False

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
            "pooled": self.pooled,
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

    def checked(self, name: str, params: Mapping[str, Any] | None = None) -> AnomalyModel:
        """:meth:`create`, for parameters from users: whatever a model (a plugin's too)
        raises on bad parameters becomes ``InvalidPatch`` naming the model."""
        try:
            return self.create(name, params)
        except TwinfleetError:
            raise  # an unknown model, as itself
        except Exception as err:
            raise InvalidRequest(f"parameters of model {name!r}: {err}", field="params") from None

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


def is_trainable(model: AnomalyModel) -> bool:
    """Whether ``model`` can be fitted on history (looking behind :class:`SelectedInputs`)."""
    inner = model.model if isinstance(model, SelectedInputs) else model
    return isinstance(inner, TrainableModel)


def _with_inputs(spec: ModelSpec, model: AnomalyModel) -> AnomalyModel:
    return SelectedInputs(model, frozenset(spec.inputs)) if spec.inputs else model


def parameters(kind: type[P], params: Mapping[str, Any], model: str) -> P:
    """A model's parameter dataclass from a plain mapping, naming unknown keys clearly."""
    assert is_dataclass(kind)
    unknown = set(params) - {f.name for f in fields(kind)}
    if unknown:
        raise ValueError(f"unknown {model} parameters: {', '.join(sorted(unknown))}")
    return kind(**params)
