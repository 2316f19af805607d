"""The router: device messages -> per-host batches -> Ray calls, with backpressure.

Messages for one host collect in a buffer that is sent when it holds ``max_batch`` messages or
its oldest message has waited ``max_delay_s``. At most ``max_in_flight`` batches per host are
unanswered at a time; past that, ``route`` blocks the caller until a host answers (never drops).
A batch whose host died is retried by Ray on the restarted actor.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import ray

from .messages import ApplyResult, DeviceMessage, Rejection

__all__ = ["Router", "RouterSettings"]

log = logging.getLogger(__name__)

_Pending = tuple["ray.ObjectRef[ApplyResult]", int, int]


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """Batching and backpressure of the router."""

    max_batch: int = 1000
    max_delay_s: float = 0.02
    max_in_flight: int = 4

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        if self.max_delay_s <= 0:
            raise ValueError("max_delay_s must be positive")


class Router:
    """Batches messages per host and sends them as ``host.apply`` Ray calls."""

    def __init__(
        self,
        owner: Callable[[str], Any],
        *,
        settings: RouterSettings | None = None,
        on_rejected: Callable[[Rejection], None] | None = None,
    ) -> None:
        self._owner = owner  # device id -> actor handle of its host
        self._settings = settings or RouterSettings()
        self._on_rejected = on_rejected
        self._lock = threading.RLock()
        self._buffers: dict[Any, list[DeviceMessage]] = {}
        self._oldest: dict[Any, float] = {}
        # host -> [(ref, batch size, sequence number)] of batches sent, not yet accounted for
        self._in_flight: dict[Any, list[_Pending]] = collections.defaultdict(list)
        # Ray runs an async actor's calls in any order: hosts put batches back in sequence.
        self._sender = uuid.uuid4().hex
        self._seq: dict[Any, int] = collections.defaultdict(int)
        self.applied = 0
        self.stale = 0
        self.rejected = 0
        self.batches = 0
        self.failed = 0
        self.recent_rejections: collections.deque[Rejection] = collections.deque(maxlen=1000)
        self._closed = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="twinfleet-router", daemon=True)
        self._ticker.start()

    def route(self, messages: Iterable[DeviceMessage]) -> None:
        """Queue messages for their hosts; blocks while a host has too many batches unanswered."""
        max_batch = self._settings.max_batch
        owner = self._owner
        with self._lock:
            buffers = self._buffers
            for msg in messages:
                host = owner(msg[0])
                buf = buffers.get(host)
                if buf is None:
                    buf = buffers[host] = []
                    self._oldest[host] = time.monotonic()
                buf.append(msg)
                if len(buf) >= max_batch:
                    self._send(host)

    def _send(self, host: Any) -> None:
        batch = self._buffers.pop(host, None)
        self._oldest.pop(host, None)
        if not batch:
            return
        pending = self._in_flight[host]
        if len(pending) >= self._settings.max_in_flight:
            self._settle(pending, wait_for=len(pending) - self._settings.max_in_flight + 1)
        # One pickled blob per batch: Ray would otherwise serialise every message separately.
        blob = pickle.dumps([tuple(m) for m in batch], protocol=pickle.HIGHEST_PROTOCOL)
        seq = self._seq[host]
        self._seq[host] = seq + 1
        first = min((p[2] for p in pending), default=seq)  # oldest unanswered: where to resume
        ref = host.apply_packed.remote(blob, sender=self._sender, seq=seq, first=first)
        pending.append((ref, len(batch), seq))
        self.batches += 1

    def _settle(self, pending: list[_Pending], *, wait_for: int) -> None:
        """Wait for ``wait_for`` of ``pending`` to finish; account for every finished one."""
        by_ref = {p[0]: p for p in pending}
        sizes = {p[0]: p[1] for p in pending}
        refs = list(sizes)
        done: list[ray.ObjectRef[ApplyResult]] = []
        if wait_for > 0:
            done, refs = ray.wait(refs, num_returns=wait_for)
        if refs:
            more, refs = ray.wait(refs, num_returns=len(refs), timeout=0)
            done.extend(more)
        pending[:] = [by_ref[ref] for ref in refs]
        for ref in done:
            try:
                self._account(ray.get(ref))
            except Exception:  # the host failed even after Ray's retries
                self.failed += sizes[ref]
                log.exception("a batch of %d messages could not be applied", sizes[ref])

    def _account(self, result: ApplyResult) -> None:
        self.applied += result.applied
        self.stale += result.stale
        if result.rejected:
            self.rejected += len(result.rejected)
            self.recent_rejections.extend(result.rejected)
            if self._on_rejected is not None:
                for rejection in result.rejected:
                    self._on_rejected(rejection)

    def _tick(self) -> None:
        delay = self._settings.max_delay_s
        while not self._closed.wait(delay / 2):
            now = time.monotonic()
            with self._lock:
                for host, since in list(self._oldest.items()):
                    if now - since >= delay:
                        self._send(host)
                for pending in self._in_flight.values():
                    if pending:
                        self._settle(pending, wait_for=0)

    def flush(self, host: Any = None) -> None:
        """Send buffered messages and wait until every batch sent so far is applied.

        With ``host``, only that host's messages: what a read of one twin needs.
        """
        with self._lock:
            hosts = list(self._buffers) if host is None else [host]
            for each in hosts:
                self._send(each)
            pending_lists = self._in_flight.values() if host is None else [self._in_flight[host]]
            for pending in pending_lists:
                if pending:
                    self._settle(pending, wait_for=len(pending))

    def sent(self) -> list[ray.ObjectRef[ApplyResult]]:
        """Send every buffered message now; the refs of every batch not yet answered (await
        them to know that what was routed so far is applied, without holding the router)."""
        with self._lock:
            for host in list(self._buffers):
                self._send(host)
            return [p[0] for pending in self._in_flight.values() for p in pending]

    def has_pending(self, host: Any = None) -> bool:
        """Whether messages for ``host`` (or any) are buffered or unanswered (no lock: a hint
        for skipping :meth:`flush`, exact for messages routed before by the same thread)."""
        if host is None:
            return any(self._buffers.values()) or any(self._in_flight.values())
        return bool(self._buffers.get(host)) or bool(self._in_flight.get(host))

    @property
    def in_flight(self) -> int:
        """Batches sent to hosts, not yet answered (no lock: a scrape must not wait)."""
        return sum(len(p) for p in list(self._in_flight.values()))

    @property
    def buffered(self) -> int:
        """Messages queued here, not yet sent."""
        return sum(len(b) for b in list(self._buffers.values()))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold every caller of ``route`` while the block runs, with nothing in flight."""
        with self._lock:
            self.flush()
            yield

    def close(self) -> None:
        """Flush, then stop the timer thread."""
        self.flush()
        self._closed.set()
        self._ticker.join(timeout=5)
