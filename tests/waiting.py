"""Waiting for something that happens elsewhere (a broker, a host, a database) in tests."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    predicate: Callable[[], Any], timeout: float = 10.0, *, what: str = "condition"
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; fail after
    ``timeout`` s. Exceptions count as "not yet" (a twin that does not exist yet)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except Exception as err:
            last = err
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s (last error: {last})")
        await asyncio.sleep(0.02)
