"""Application writes: a change to a twin, committed to the store before it is answered.

:class:`GroupCommit` carries every commit waiting at once in one store transaction;
:class:`TwinWrites` makes each write (desired, tags, registry, lifecycle, model, alarms)
durable through it, and undoes it if the commit fails.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping
from typing import Any

from twinfleet.errors import StoreUnavailable, VersionConflict
from twinfleet.twins import Twin, TwinfleetError, TwinNotFound, validate_device_id

from .activation import Activation
from .models import ModelPolicy
from .outbox import Outbox
from .residents import Residents

__all__ = ["GroupCommit", "TwinWrites", "desired_document"]


def desired_document(twin: Twin) -> dict[str, Any]:
    """What the device is told: ``{"version", "desired", "delta"}`` (published retained)."""
    return {"version": twin.version, "desired": copy.deepcopy(twin.desired), "delta": twin.delta()}


class GroupCommit:
    """Commits snapshots (with registry entries) durably, many to one store transaction.

    One transaction (one fsync) carries every commit that arrived while the previous one was
    being written, so many concurrent writers cost a few transactions, not one each. If it
    fails, it fails for all of them, and each undoes its own change.
    """

    def __init__(self, residents: Residents) -> None:
        self._residents = residents
        self._waiting: list[
            tuple[Mapping[str, Any], Mapping[str, Any] | None, asyncio.Future[None]]
        ] = []
        self._writer: asyncio.Task[None] | None = None

    async def commit(self, snapshot: Mapping[str, Any], registry: Mapping[str, Any] | None) -> None:
        """Commit durably, together with the other commits waiting now."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((snapshot, registry, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await future

    async def _write(self) -> None:
        residents = self._residents
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await residents.run(residents.store.commit_many, [(s, r) for s, r, _ in batch])
            except Exception as err:
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(err)
            else:
                for *_, future in batch:
                    if not future.done():
                        future.set_result(None)


class TwinWrites:
    """The application writes to a host's twins, each durable before it is answered."""

    def __init__(
        self,
        residents: Residents,
        activation: Activation,
        commits: GroupCommit,
        models: ModelPolicy,
        outbox: Outbox,
    ) -> None:
        self._residents = residents
        self._activation = activation
        self._commits = commits
        self._models = models
        self._outbox = outbox

    async def write(
        self,
        twin_id: str,
        change: Callable[[Twin, float], bool],
        *,
        create_type: str | None = None,
        create: bool = False,
        expected_version: int | None = None,
        registry: Mapping[str, Any] | None = None,
        answer: Callable[[Twin], Any] = Twin.document,
        committed: Callable[[Twin], None] | None = None,
    ) -> Any:  # what ``answer`` returns: the twin document unless told otherwise
        """Apply ``change`` to a twin and commit it before answering; undo it if that fails.

        ``change`` says whether it changed anything (nothing to commit if not, unless the twin
        is new or a ``registry`` entry goes with it). ``answer`` builds the reply from the twin,
        ``committed`` runs once the change is durable (events, waking waiters).

        Application writes to one twin take turns (device messages still flow meanwhile), so
        an undo never takes another acknowledged write with it.
        """
        residents = self._residents
        validate_device_id(twin_id)
        async with residents.write_lock(twin_id):
            twin = residents.twins.get(twin_id)
            if twin is None:
                await self._activation.activate([twin_id])
                twin = residents.twins.get(twin_id)
            created = twin is None
            if twin is None:
                if not create:
                    raise TwinNotFound(twin_id)
                if expected_version not in (None, 0):
                    raise VersionConflict(twin_id, expected_version, 0)
                await self._activation.activate([twin_id], create={twin_id: create_type})
                twin = residents.twins[twin_id]
            now = residents.clock()
            residents.last_used[twin_id] = now
            before = twin.checkpoint()
            if not change(twin, now) and not created and registry is None:
                return answer(twin)
            bumped = twin.version - before.version
            snapshot = twin.snapshot()
            residents.dirty.discard(twin_id)  # this commit covers everything up to now
            try:
                await self._commits.commit(snapshot, registry)
            except Exception as err:
                if created:
                    residents.forget(twin_id)
                else:
                    twin.restore(before, bumped=bumped)
                    residents.dirty.add(twin_id)
                if isinstance(err, TwinfleetError):
                    raise
                raise StoreUnavailable(f"the state store could not commit: {err}") from err
            residents.counters["commits"] += 1
            if committed is not None:
                committed(twin)
            return answer(twin)

    async def patch_desired(
        self,
        twin_id: str,
        patch: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        device_type: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch desired state; creates the twin if it does not exist (version 0)."""
        doc: dict[str, Any] = await self.write(
            twin_id,
            lambda twin, now: twin.patch_desired(patch, now=now, expected_version=expected_version),
            create_type=device_type,
            create=True,
            expected_version=expected_version,
            committed=lambda twin: self._outbox.emit("desired", twin.id, desired_document(twin)),
        )
        return doc

    async def patch_tags(
        self, twin_id: str, patch: Mapping[str, Any], *, expected_version: int | None = None
    ) -> dict[str, Any]:
        """Merge-patch the twin's tags."""
        doc: dict[str, Any] = await self.write(
            twin_id,
            lambda twin, now: twin.patch_tags(patch, now=now, expected_version=expected_version),
        )
        return doc

    async def register(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Create (or update type and tags of) the twin of a registry entry, with the entry."""
        device_type = entry.get("type")

        def change(twin: Twin, now: float) -> bool:
            changed = False
            twin.mark_registered()  # created now: active on its first message
            if device_type and twin.set_type(device_type):
                self._models.reconcile(twin, now)
                changed = True
            tags = entry.get("tags")
            if tags:
                changed = twin.patch_tags(tags, now=now) or changed
            return changed

        doc: dict[str, Any] = await self.write(
            validate_device_id(entry["id"]),
            change,
            create_type=device_type,
            create=True,
            registry=entry,
        )
        return doc

    async def set_lifecycle(
        self, twin_id: str, state: str, *, registry: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Suspend, resume or decommission a device, with its registry entry."""
        doc: dict[str, Any] = await self.write(
            twin_id,
            lambda twin, now: twin.set_lifecycle(state, now=now),
            registry={**registry, "lifecycle": state},
        )
        return doc

    async def set_model(
        self,
        twin_id: str,
        model: str | None,
        params: Mapping[str, Any] | None = None,
        *,
        trained: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Give one twin a model of its own (``model`` None: back to its family's)."""
        if model is not None:
            self._models.registry.checked(model, params)  # refuse bad names and params now

        def change(twin: Twin, now: float) -> bool:
            twin.set_model_choice(self._models.own_choice(model, params, trained))
            return self._models.reconcile(twin, now, trained=trained) or True

        doc: dict[str, Any] = await self.write(twin_id, change)
        return doc

    async def ack_alarm(self, twin_id: str, alarm_id: str, *, who: str) -> dict[str, Any]:
        """Acknowledge an open alarm of a twin; the alarm as it is now."""

        def change(twin: Twin, now: float) -> bool:
            return twin.acknowledge_alarm(alarm_id, who=who, now=now)

        def alarm_of(twin: Twin) -> dict[str, Any]:
            return next(a for a in twin.alarms.alarms() if a["id"] == alarm_id)

        alarm: dict[str, Any] = await self.write(
            twin_id,
            change,
            answer=alarm_of,
            committed=lambda twin: self._outbox.emit("alarm", twin.id, dict(alarm_of(twin))),
        )
        return alarm
