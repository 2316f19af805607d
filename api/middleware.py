"""The API's ASGI middleware: what must hold for every request before any route runs.

Plain ASGI classes, not Starlette's ``BaseHTTPMiddleware``: no task and no buffering per
request. (Request latencies are observed by ``ApiLatencyMiddleware``, beside the metrics it
feeds, in ``api/metrics.py``.)
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twinfleet.errors import PayloadTooLarge

from .errors import error_body

__all__ = ["BodyLimit"]


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413 (plain ASGI: no task per request).

    A declared ``Content-Length`` over the limit is refused before any route runs; a body
    without one (chunked) is counted as it is read and refused where it passes the limit.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the declared length, then count what is read."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await self._refuse(scope, receive, send)
                    return
                break
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise PayloadTooLarge(self._message(), field="body")
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"request bodies are limited to {self.limit} bytes"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = error_body(PayloadTooLarge.code, self._message(), "body")
        await JSONResponse(body, 413)(scope, receive, send)
