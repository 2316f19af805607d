"""``MessageApplier``: device messages applied to a host's twins, batch by batch (the hot path)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from twinfleet.models import prescore
from twinfleet.runtime.messages import ApplyResult, DeviceMessage, Rejection
from twinfleet.runtime.telemetry import points_from_message
from twinfleet.twins import TwinfleetError, parse_timestamp, validate_device_id

from .activation import Activation
from .delays import DelaySamples
from .history import HistoryBuffer
from .models import ModelPolicy
from .outbox import Outbox, anomaly_data, presence_data
from .residents import Residents

__all__ = ["MessageApplier"]

_YIELD_EVERY = 128  # messages applied between two turns of the event loop
_PRESCORE_EVERY = 1024  # readings scored in one call by batch-scored models (a forest: ~6 ms/call)


class MessageApplier:
    """Applies batches of device messages: creates the twins they name, keeps their history,
    tells what changed (anomalies, alarms, presence, rejections) and samples their delays.

    Twin state only changes between awaits, so each twin sees one message at a time; the
    loop yields every few messages so that application calls are not stalled by a big batch.
    """

    def __init__(
        self,
        residents: Residents,
        activation: Activation,
        *,
        models: ModelPolicy,
        history: HistoryBuffer,
        outbox: Outbox,
        delays: DelaySamples,
    ) -> None:
        self._residents = residents
        self._activation = activation
        self._models = models
        self._history = history
        self._outbox = outbox
        self._delays = delays

    async def apply(self, messages: Sequence[DeviceMessage]) -> ApplyResult:
        """Apply a batch of device messages; bad ones are rejected one by one, never the batch."""
        residents = self._residents
        twins = residents.twins
        rejected: list[Rejection] = []
        protocols: list[str | None] = []  # of each rejected message, for its event
        new: dict[str, str | None] = {}
        refused: set[Any] = set()
        for msg in messages:
            if msg[0] not in twins and msg[0] not in new:
                try:
                    validate_device_id(msg[0])
                except TwinfleetError as err:
                    rejected.append(Rejection(str(msg[0]), err.code, err.message))
                    protocols.append(msg[4] if len(msg) > 4 else None)
                    refused.add(msg[0])
                    continue
                new[msg[0]] = msg[5] if len(msg) > 5 else None
        if new:
            await self._activation.activate(new, create=new)
        now = residents.clock()
        applied = stale = 0
        # Locals for the loop below: one lookup per batch, not one per message.
        models = self._models
        history = self._history.sink is not None
        points = self._history.points  # the same list for ever, so safe across the yields
        record_score = self._history.record_score
        emit = self._outbox.emit
        dirty = residents.dirty
        last_used = residents.last_used
        missed: list[DeviceMessage] = []
        for n, msg in enumerate(messages):
            if n % _YIELD_EVERY == _YIELD_EVERY - 1:
                # Let application calls in between: a big batch must not stall them.
                await asyncio.sleep(0)
            if models.batch_scoring and n % _PRESCORE_EVERY == 0:
                self._prescore(messages[n : n + _PRESCORE_EVERY])
            twin_id = msg[0]
            twin = twins.get(twin_id)
            if twin is None:
                if twin_id not in refused:
                    missed.append(msg)  # passivated while this batch yielded: load it again
                continue
            was_online = twin.online
            was_anomalous = twin.anomalous
            was_scored = twin.scored
            try:
                changed = twin.apply_message(
                    msg[1],
                    msg[2],
                    now=now,
                    ts=msg[3],
                    protocol=msg[4],
                    seen=msg[6] if len(msg) > 6 else None,
                )
            except TwinfleetError as err:
                rejected.append(Rejection(twin_id, err.code, err.message))
                protocols.append(msg[4])
                continue
            except (TypeError, ValueError, AttributeError) as err:
                rejected.append(Rejection(twin_id, "invalid_message", str(err)))
                protocols.append(msg[4])
                continue
            last_used[twin_id] = now
            scored = twin.scored != was_scored
            if history and (scored or msg[1] == "telemetry"):
                # valid: the twin has just parsed it
                when = parse_timestamp(msg[3] if msg[3] is not None else msg[2].get("ts", now))
                if msg[1] == "telemetry":
                    # History keeps every accepted reading, stale ones included.
                    points.extend(points_from_message(twin_id, msg[2], when))
                if scored:
                    record_score(twin, was_anomalous, when)
            if changed:
                applied += 1
                dirty.add(twin_id)
                if twin.anomalous != was_anomalous:
                    emit("anomaly", twin_id, anomaly_data(twin))
                if twin.alarm_changes:
                    for alarm in twin.drain_alarm_changes():
                        emit("alarm", twin_id, dict(alarm))
            else:
                stale += 1
            if not was_online:
                dirty.add(twin_id)  # presence changed, even if no value did
                emit("presence", twin_id, presence_data(twin))
        self._delays.sample(messages, residents.clock())
        self._history.bound()
        for rejection, protocol in zip(rejected, protocols, strict=True):
            data = {"code": rejection.code, "message": rejection.message, "protocol": protocol}
            emit("rejected", rejection.device_id, data)
        counters = residents.counters
        counters["applied"] += applied
        counters["stale"] += stale
        counters["rejected"] += len(rejected)
        if missed:
            more = await self.apply(missed)
            return ApplyResult(
                applied + more.applied, stale + more.stale, (*rejected, *more.rejected)
            )
        return ApplyResult(applied, stale, tuple(rejected))

    def _prescore(self, messages: Sequence[DeviceMessage]) -> None:
        """Score the readings of batch-scored models (one numpy call per group) ahead of time.

        Each model hands its verdict out when the twin applies that reading; a reading the twin
        takes otherwise (stale, say) is scored on its own then.
        """
        twins = self._residents.twins
        readings: list[tuple[Any, dict[str, float]]] = []
        for msg in messages:
            twin = twins.get(msg[0])
            if twin is None or getattr(twin.model, "batch_group", None) is None:
                continue
            payload = msg[2]
            values = {k: v for k, v in payload.items() if type(v) in (float, int) and k != "ts"}
            if values:
                readings.append((twin.model, values))
        if readings:
            prescore(readings)
