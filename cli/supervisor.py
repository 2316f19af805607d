"""``Supervisor``: keeps ``twinfleet up``'s edge processes running.

Every edge (broker, gateways, CoAP endpoint, simulated devices) is a Ray actor that Ray
restarts when its process dies (``max_restarts=-1``). A restarted actor is a fresh process
that has not started yet: the supervisor looks at each child every ``interval_s`` (its
``stats()``, which also feeds the fleet summary and the metrics) and calls ``start`` again on
one that says ``started: false``, with the arguments for a restart (the same port, no second
registration). A child that cannot be reached for ``respawn_after_s`` is replaced by a new
actor. ``stop`` stops the children in the reverse order of their start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

__all__ = ["Child", "Supervisor"]

log = logging.getLogger(__name__)

#: ``start(actor, facts)`` -> the ObjectRef of the actor's ``start`` call; ``facts`` is None on
#: the first start, then what the first start returned (a restart listens where it did).
Starter = Callable[[Any, "dict[str, Any] | None"], Any]


@dataclass(slots=True)
class Child:
    """One supervised edge process."""

    name: str
    spawn: Callable[[], Any]
    start: Starter
    actor: Any = None
    facts: dict[str, Any] = field(default_factory=dict)  # what its first start returned
    stats: dict[str, Any] = field(default_factory=dict)  # its latest stats
    restarts: int = 0
    up: bool = False
    unreachable_since: float | None = None


class Supervisor:
    """Starts edge actors and keeps them started (see the module's docstring)."""

    def __init__(
        self,
        *,
        interval_s: float = 1.0,
        call_timeout_s: float = 10.0,
        start_timeout_s: float = 60.0,
        respawn_after_s: float = 60.0,
    ) -> None:
        self._interval_s = interval_s
        self._call_timeout_s = call_timeout_s
        self._start_timeout_s = start_timeout_s
        self._respawn_after_s = respawn_after_s
        self._children: list[Child] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, name: str, spawn: Callable[[], Any], start: Starter) -> dict[str, Any]:
        """Spawn a child and start it (raises what its start raised); returns its facts."""
        child = Child(name, spawn, start, actor=spawn())
        try:
            facts = ray.get(start(child.actor, None), timeout=self._start_timeout_s)
            child.facts = dict(facts or {})
        except BaseException:
            ray.kill(child.actor, no_restart=True)
            raise
        child.up = True
        with self._lock:
            self._children.append(child)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._watch, name="twinfleet-supervisor", daemon=True
            )
            self._thread.start()
        return child.facts

    def children(self) -> list[Child]:
        """The children, in the order they were started."""
        with self._lock:
            return list(self._children)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each child's latest stats, with ``up`` and ``restarts``, by name."""
        return {c.name: {**c.stats, "up": c.up, "restarts": c.restarts} for c in self.children()}

    def _watch(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.check()

    def check(self) -> None:
        """Look at every child once: refresh its stats, start it again if it was restarted."""
        children = self.children()
        refs = {}
        for child in children:
            try:
                refs[child.name] = child.actor.stats.remote()
            except Exception:
                refs[child.name] = None
        for child in children:
            if self._stopping.is_set():
                return
            self._check(child, refs[child.name])

    def _check(self, child: Child, ref: Any) -> None:
        now = time.monotonic()
        try:
            if ref is None:
                raise RuntimeError("the actor cannot be called")
            stats = ray.get(ref, timeout=self._call_timeout_s)
        except Exception as err:
            child.up = False
            if child.unreachable_since is None:
                child.unreachable_since = now
                log.warning("edge %s is not answering (%s); waiting for Ray", child.name, err)
            elif now - child.unreachable_since > self._respawn_after_s:
                log.warning("edge %s is gone: starting a new one", child.name)
                ray.kill(child.actor, no_restart=True)
                child.actor = child.spawn()
                child.unreachable_since = now
            return
        child.unreachable_since = None
        child.stats = stats
        if stats.get("started", True):
            child.up = True
            return
        # A fresh process (Ray restarted it after its old one died): start it again.
        child.up = False
        try:
            ray.get(child.start(child.actor, child.facts), timeout=self._start_timeout_s)
        except Exception:
            log.exception("restarting edge %s failed; trying again", child.name)
            return
        child.restarts += 1
        child.up = True
        log.warning("edge %s was restarted (%d so far)", child.name, child.restarts)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop watching, then stop every child (newest first) and end its actor."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        for child in reversed(self.children()):
            try:
                ray.get(child.actor.stop.remote(), timeout=timeout_s)
            except Exception as err:
                log.warning("stopping edge %s: %s", child.name, err)
            ray.kill(child.actor, no_restart=True)
        with self._lock:
            self._children.clear()
