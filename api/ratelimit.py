"""Request rate limits per bearer token (the ``limits`` library, moving windows).

Counters live in the API process (``memory://``) or in Redis (``redis://...``), where every
API process of a cluster shares them.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits import storage as limit_storage
from limits.aio.strategies import MovingWindowRateLimiter

from twinfleet.errors import RateLimited

__all__ = ["RateLimited", "RequestLimiter"]


class RequestLimiter:
    """Counts requests per key (a token id) against one limit such as ``"3000/minute"``."""

    def __init__(self, limit: str, *, storage_url: str = "memory://") -> None:
        try:
            self.item: RateLimitItem = parse(limit)
        except ValueError:
            raise ValueError(
                f"rate limit {limit!r} is not like '3000/minute' or '50/second'"
            ) from None
        self.limit = limit
        scheme = storage_url if storage_url.startswith("async+") else f"async+{storage_url}"
        self._limiter = MovingWindowRateLimiter(limit_storage.storage_from_string(scheme))

    async def check(self, key: str) -> None:
        """Count one request for ``key``; :class:`RateLimited` once it is over the limit."""
        if await self._limiter.hit(self.item, "twinfleet-api", key):
            return
        stats = await self._limiter.get_window_stats(self.item, "twinfleet-api", key)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"over the limit of {self.limit} requests for this token; retry in {wait} s",
            retry_after=wait,
        )
