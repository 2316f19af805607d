"""``AlarmPolicy``: the alarm rules each family's twins follow on one host."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twinfleet.twins import Twin
from twinfleet.twins.alarms import AlarmRule, rules_from_documents

from .outbox import Outbox
from .residents import Residents

__all__ = ["ALARM_RULES", "AlarmPolicy"]

ALARM_RULES = "alarm-rules"  # store items: family -> {"family", "rules": [...]}


class AlarmPolicy:
    """Family -> the alarm rules its twins follow instead of the built-in ones."""

    def __init__(
        self,
        residents: Residents,
        outbox: Outbox,
        rules: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    ) -> None:
        self._residents = residents
        self._outbox = outbox
        self._rules: dict[str, tuple[AlarmRule, ...]] = {
            family: rules_from_documents(r) for family, r in (rules or {}).items()
        }

    def apply(self, twin: Twin, now: float) -> bool:
        """Give ``twin`` its family's current alarm rules; alarms of removed rules clear."""
        rules = self._rules.get(twin.family.name)
        if rules is None and twin.alarm_rules is None and not twin.alarms.open:
            return False  # the common case: built-in rules, nothing to retire
        if not twin.set_alarm_rules(rules, now=now):
            return False
        self._residents.dirty.add(twin.id)
        for alarm in twin.drain_alarm_changes():
            self._outbox.emit("alarm", twin.id, dict(alarm))
        return True

    def set_family(self, family: str, rules: Sequence[Mapping[str, Any]] | None) -> int:
        """Judge a family's readings by ``rules`` (None: its built-in ones) from now on.

        Active twins switch now (alarms of rules that are gone clear), sleeping ones when they
        wake. Returns how many active twins had an alarm cleared by the change.
        """
        if rules is None:
            self._rules.pop(family, None)
        else:
            self._rules[family] = rules_from_documents(rules)
        now = self._residents.clock()
        return sum(
            self.apply(twin, now)
            for twin in list(self._residents.twins.values())
            if twin.family.name == family
        )
