"""Training anomaly models on history, beside the hosts, and swapping them into the twins.

A training job reads the history of a family's twins (or of named twins) from the hosts, fits
the model (one model on the whole family's readings, ``scope="family"``, or one per twin on
its own readings, ``scope="twin"``), then installs it: a family's assignment gains the trained
state (durably; every host switches its twins, sleeping ones when they wake) or each twin gets
a trained model of its own. The model's version becomes ``<spec version>+<job id>``, which the
twins' ``anomaly`` section shows. Jobs run as Ray tasks (``actors.spawn_training``) and keep
their progress in the state store, so any process can follow them.

This module is the plain logic: the fleet it talks to is a small protocol.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from twinfleet.errors import InvalidRequest, TrainingNotFound
from twinfleet.models import (
    ModelArtifacts,
    ModelRegistry,
    TrainableModel,
    default_registry,
    is_trainable,
)
from twinfleet.twins import family_named

from .artifacts import StoreArtifacts
from .host import MODEL_ASSIGNMENT
from .stores import StateStore

__all__ = [
    "MODEL_TRAINING",
    "TrainingHosts",
    "TrainingNotFound",
    "TrainingRequest",
    "new_training",
    "order_records",
    "run_training",
]

log = logging.getLogger(__name__)

MODEL_TRAINING: Final = "model-training"  # store items: job id -> the job's record
History = dict[str, list[tuple[float, dict[str, float]]]]


@dataclass(frozen=True, slots=True)
class TrainingRequest:
    """What to train: a model (with parameters) on a family's or some twins' history.

    ``scope="family"``: one model fitted on the readings of up to ``max_twins`` of the family's
    active twins, given to the whole family. ``scope="twin"``: each twin (the named ones, or
    the family's active ones) fitted on its own readings and given that model as its own.
    ``since``/``until`` bound the history (Unix seconds); ``limit`` caps readings per twin.
    """

    model: str
    params: Mapping[str, Any] = field(default_factory=dict)
    family: str | None = None
    twins: tuple[str, ...] = ()
    scope: Literal["family", "twin"] = "family"
    since: float | None = None
    until: float | None = None
    max_twins: int = 1_000
    limit: int = 10_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "twins", tuple(self.twins))
        if self.scope not in ("family", "twin"):
            raise InvalidRequest(f"scope {self.scope!r} is not family or twin", field="scope")
        if self.family is not None:
            family_named(self.family)
        if self.scope == "family" and (self.family is None or self.twins):
            raise InvalidRequest(
                "a family-wide training names a family and no twins", field="family"
            )
        if self.scope == "twin" and self.family is None and not self.twins:
            raise InvalidRequest("a per-twin training names a family or twins", field="twins")
        if self.max_twins < 1 or self.limit < 2:
            raise InvalidRequest("max_twins must be 1 or more and limit 2 or more", field="limit")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidRequest("since must come before until", field="since")

    def describe(self) -> dict[str, Any]:
        """JSON-ready, for the job's record."""
        return {
            "model": self.model,
            "params": dict(self.params),
            "family": self.family,
            "twins": list(self.twins),
            "scope": self.scope,
            "since": self.since,
            "until": self.until,
        }


class TrainingHosts(Protocol):
    """What a training job needs of the running fleet."""

    def history(self, request: TrainingRequest) -> History:
        """Readings per twin, oldest first, for ``request``."""
        ...

    def assign(
        self,
        family: str,
        assignment: Mapping[str, Any],
        states: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> int:
        """Give every host the family's new assignment (and each twin in ``states``, id ->
        ``{"id", "state"}``, its own trained state); how many active twins switched."""
        ...

    def set_models(
        self, model: str, params: Mapping[str, Any], trained: Mapping[str, Mapping[str, Any]]
    ) -> int:
        """Give each twin in ``trained`` (id -> ``{"id", "state"}``) its trained model."""
        ...


def new_training(
    store: StateStore, registry: ModelRegistry, request: TrainingRequest
) -> dict[str, Any]:
    """Check ``request`` and record a new job as ``running``; its record (with its ``id``)."""
    spec = registry.spec(request.model)
    model = registry.checked(request.model, request.params)
    if not is_trainable(model):
        raise InvalidRequest(
            f"model {request.model!r} cannot be trained (it has no fit)", field="model"
        )
    job_id = uuid.uuid4().hex[:12]
    record = {
        "id": job_id,
        "status": "running",
        **request.describe(),
        "version": f"{spec.version}+{job_id}",
        "submitted": time.time(),
        "finished": None,
        "twins_trained": 0,
        "readings": 0,
        "switched": 0,
        "skipped": {},
        "error": None,
    }
    store.put_item(MODEL_TRAINING, job_id, record)
    return record


def run_training(
    job_id: str,
    request: TrainingRequest,
    fleet: TrainingHosts,
    store: StateStore,
    registry: ModelRegistry | None = None,
) -> dict[str, Any]:
    """Run the job ``job_id`` to its end; its final record (``succeeded`` or ``failed``).

    Never raises for a failed training: the reason is in the record's ``error``.
    """
    registry = registry or default_registry(artifacts=ModelArtifacts(StoreArtifacts(store)))
    record = store.get_item(MODEL_TRAINING, job_id) or {"id": job_id, **request.describe()}
    started = time.time()
    try:
        history = fleet.history(request)
        record["history_seconds"] = round(time.time() - started, 3)
        if not history:
            where = request.family or ", ".join(request.twins)
            raise ValueError(f"no telemetry history of {where} in the requested range")
        record["readings"] = sum(len(r) for r in history.values())
        pooled = registry.spec(request.model).pooled
        trained: dict[str, dict[str, Any]] = {}
        fitting = time.time()
        if request.scope == "family" and pooled:
            model = registry.create(request.model, request.params)
            assert isinstance(model, TrainableModel)  # checked by new_training
            model.fit([reading for twin in sorted(history) for reading in history[twin]])
            family_state: dict[str, Any] | None = model.state()
            record["twins_trained"] = len(history)
        else:
            family_state = None
            skipped: dict[str, str] = {}
            for twin_id, readings in sorted(history.items()):
                model = registry.create(request.model, request.params)
                assert isinstance(model, TrainableModel)
                try:
                    model.fit(readings)
                except ValueError as err:  # too little history, say: this twin only
                    skipped[twin_id] = str(err)
                    continue
                trained[twin_id] = {"id": job_id, "state": model.state()}
            if not trained:
                raise ValueError(f"no twin could be trained: {next(iter(skipped.values()))}")
            record["twins_trained"] = len(trained)
            record["skipped"] = skipped
        record["fit_seconds"] = round(time.time() - fitting, 3)
        if request.scope == "family":
            assert request.family is not None  # checked by the request
            # A pooled model's state serves the whole family; otherwise each trained twin
            # starts from its own state and twins trained later start untrained.
            training: dict[str, Any] = {
                "id": job_id,
                "at": time.time(),
                "twins": record["twins_trained"],
                "readings": record["readings"],
            }
            if family_state is not None:
                training["state"] = family_state
            assignment = {
                "family": request.family,
                "model": request.model,
                "params": dict(request.params),
                "trained": training,
            }
            store.put_item(MODEL_ASSIGNMENT, request.family, assignment)
            record["switched"] = fleet.assign(request.family, assignment, trained or None)
        else:
            record["switched"] = fleet.set_models(request.model, request.params, trained)
        record["status"] = "succeeded"
    except Exception as err:  # reported in the job's record, as the job's result
        log.warning("training %s failed: %s", job_id, err)
        log.debug("%s", traceback.format_exc())
        record["status"] = "failed"
        record["error"] = str(err) or type(err).__name__
    record["finished"] = time.time()
    record["seconds"] = round(record["finished"] - started, 3)
    store.put_item(MODEL_TRAINING, job_id, record)
    return record


def order_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Jobs newest first."""
    return sorted((dict(r) for r in records), key=lambda r: -float(r.get("submitted") or 0))
