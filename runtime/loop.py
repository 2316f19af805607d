"""An asyncio event loop in a thread of its own, for sync code that makes async calls."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["EventLoopThread"]

_T = TypeVar("_T")


class EventLoopThread:
    """Runs coroutines for callers in other threads (the sync ``Runtime`` facade)."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, call: Coroutine[Any, Any, _T]) -> _T:
        """Run ``call`` on the loop and wait for its result (or error) in this thread."""
        if threading.current_thread() is self._thread:
            call.close()
            raise RuntimeError("a sync call from the loop's own thread would wait for itself")
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def stop(self) -> None:
        """Stop the loop and its thread (pending calls are cancelled)."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
