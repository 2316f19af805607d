"""``ModelPolicy``: which anomaly model each twin of a host gets, and making it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from twinfleet.models import ModelRegistry
from twinfleet.twins import Twin, UnknownModel
from twinfleet.twins.twin import ModelSlot

__all__ = ["MODEL_ASSIGNMENT", "ModelPolicy"]

log = logging.getLogger(__name__)

MODEL_ASSIGNMENT = "model-assignment"  # store items: family -> {"family", "model", "params"}


class ModelPolicy:
    """The model a twin should have: its own, else its family's assignment, else the
    family's built-in default; and the twin given that model when it has another."""

    def __init__(
        self,
        host_id: str,
        registry: ModelRegistry,
        assignments: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._host_id = host_id
        self.registry = registry
        # family -> {"model", "params"}: the model its twins get unless a twin has its own
        self._assignments: dict[str, dict[str, Any]] = {
            family: dict(a) for family, a in (assignments or {}).items()
        }
        self.batch_scoring = False  # whether any twin here has a batch-scored model

    def assign(self, family: str, assignment: Mapping[str, Any] | None) -> None:
        """Give a family ``{"model", "params"}`` (None: back to its built-in default)."""
        if assignment is None:
            self._assignments.pop(family, None)
        else:
            self._assignments[family] = dict(assignment)

    def chosen(self, twin: Twin, trained: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``{"name", "params", "source"}`` of the model ``twin`` should have now (and
        ``trained``, the id of the training it comes from, if it does)."""
        info = twin.model_info
        if info is not None and info.get("source") == "twin":
            chosen = {"name": info["name"], "params": info.get("params") or {}, "source": "twin"}
            if info.get("trained"):
                chosen["trained"] = info["trained"]
            return chosen
        assigned = self._assignments.get(twin.family.name)
        if assigned is not None:
            chosen = {
                "name": assigned["model"],
                "params": assigned.get("params") or {},
                "source": "family",
            }
            training = assigned.get("trained")
            if training:
                # A family-wide state serves every twin; a twin trained on its own readings
                # (or being given its state now) keeps that training; others start untrained.
                current = (twin.model_info or {}).get("trained")
                given = trained is not None and trained.get("id") == training["id"]
                if "state" in training or current == training["id"] or given:
                    chosen["trained"] = training["id"]
            return chosen
        return {"name": twin.family.default_model, "params": {}, "source": "default"}

    def reconcile(
        self,
        twin: Twin,
        now: float,
        *,
        bump: bool = True,
        trained: Mapping[str, Any] | None = None,
    ) -> bool:
        """Give ``twin`` the model chosen for it if it has another; whether it changed.

        A twin keeps its model (and what it learnt) while name, parameters and version stay
        the same; a change of assignment, a new training or an upgraded plugin replaces it.
        A trained model's version is the spec's and the training's id (``1+3f9a...``); it
        starts from the trained state (``trained``, or its family assignment's).
        """
        chosen = self.chosen(twin, trained)
        name, params = chosen["name"], chosen["params"]
        try:
            version = self.registry.spec(name).version
        except UnknownModel:
            if chosen["source"] == "default" or twin.model_info is None:
                log.warning("host %s: model %r is unknown; twin has none", self._host_id, name)
                if twin.model is None:
                    return False
                twin.set_model(None, now=now, bump=bump)
                return True
            # An assigned model that this host cannot make (plugin missing here): keep the old.
            log.warning("host %s: assigned model %r is unknown here", self._host_id, name)
            return False
        training = chosen.get("trained")
        if training:
            version = f"{version}+{training}"
        info = {**chosen, "version": version}
        current = twin.model_info
        if (
            twin.model is not None
            and current is not None
            and all(current.get(k) == info[k] for k in ("name", "params", "version"))
        ):
            if current.get("source") != info["source"]:
                twin.set_model_choice(info)  # same model, now by another rule: keep what it learnt
            return False
        legacy = twin.model is not None and current is None and info["source"] == "default"
        if legacy and twin.model is not None and twin.model.name == name and not params:
            twin.set_model_choice(info)  # a snapshot from before models were versioned
            return False
        model = self._new_model(twin, name, params, info, trained)
        if getattr(model, "batch_group", None) is not None:
            self.batch_scoring = True
        twin.set_model(model, now=now, info=info, bump=bump)
        return True

    def _new_model(
        self,
        twin: Twin,
        name: str,
        params: Mapping[str, Any],
        info: dict[str, Any],
        trained: Mapping[str, Any] | None,
    ) -> ModelSlot:
        """The model ``info`` describes: from its trained state when there is one."""
        training = info.get("trained")
        if training:
            state = None
            if trained is not None and trained.get("id") == training:
                state = trained.get("state")
            elif info["source"] == "family":
                state = self._assignments[twin.family.name]["trained"].get("state")
            if state is not None:
                try:
                    return self.registry.restore(name, state)
                except (KeyError, ValueError, TypeError) as err:
                    log.warning("host %s: trained %s not restored: %s", self._host_id, name, err)
            # The trained state is out of reach: an untrained model, and a version that says so.
            info.pop("trained")
            info["version"] = info["version"].partition("+")[0]
        return self.registry.create(name, params)

    def restore(self, name: str, state: Mapping[str, Any]) -> ModelSlot:
        """The model a snapshot saved (``Twin.from_snapshot``'s ``restore_model``)."""
        try:
            model = self.registry.restore(name, state)
            if getattr(model, "batch_group", None) is not None:
                self.batch_scoring = True
            return model
        except (UnknownModel, ValueError, TypeError, KeyError):
            # A snapshot from a model that is gone (uninstalled plugin): start a fresh default.
            log.warning("host %s: cannot restore model %r; using a fresh ewma", self._host_id, name)
            return self.registry.create("ewma")

    @staticmethod
    def own_choice(
        model: str | None,
        params: Mapping[str, Any] | None,
        trained: Mapping[str, Any] | None,
    ) -> dict[str, Any] | None:
        """How a twin given a model of its own (None: its family's) records the choice."""
        if model is None:
            return None
        info: dict[str, Any] = {"name": model, "params": dict(params or {}), "source": "twin"}
        if trained is not None:
            info["trained"] = trained["id"]
        return info
