"""Every error the API answers, in one place: twinfleet's error codes to HTTP statuses."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from twinfleet.errors import TwinfleetError

__all__ = ["HTTP_STATUS", "error_body", "http_status", "install_error_handlers"]

HTTP_STATUS: Final[Mapping[str, int]] = MappingProxyType(
    {
        # the caller's input
        "invalid_request": 400,
        "invalid_patch": 400,
        "invalid_device_id": 400,
        "invalid_filter": 400,
        "invalid_timestamp": 400,
        "malformed_payload": 400,
        "nesting_too_deep": 400,
        "unknown_model": 400,
        "device_refused": 400,
        "payload_too_large": 413,
        "document_too_large": 413,
        "unsupported_format": 415,
        "unsupported_media_type": 415,
        # who is calling
        "unauthorized": 401,
        "forbidden": 403,
        "rate_limited": 429,
        # what the request names
        "not_found": 404,
        "twin_not_found": 404,
        "command_not_found": 404,
        "alarm_not_found": 404,
        "training_not_found": 404,
        "history_unavailable": 404,
        "unknown_resource": 404,
        "method_not_allowed": 405,
        "not_acceptable": 406,
        "conflict": 409,
        "version_conflict": 412,
        "precondition_required": 428,
        # the platform
        "internal_error": 500,
        "twinfleet_error": 500,
        "store_unavailable": 503,
    }
)


def http_status(code: str) -> int:
    """The status of an error code; a code this table does not know is the platform's
    fault (500), never the caller's."""
    return HTTP_STATUS.get(code, 500)


def error_body(code: str, message: str, field: str | None = None) -> dict[str, object]:
    """The contract's error shape."""
    return {"error": {"code": code, "message": message, "field": field}}


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error as ``{"error": {"code", "message", "field"}}``."""

    @app.exception_handler(TwinfleetError)
    async def twinfleet_error(request: Request, err: TwinfleetError) -> JSONResponse:
        status = http_status(err.code)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        retry_after = getattr(err, "retry_after", None)
        if retry_after is not None:
            headers = {"Retry-After": str(retry_after)}
        return JSONResponse(error_body(err.code, err.message, err.field), status, headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        # A bug (here or in a host): the platform's fault, said as such, with no detail leaked.
        return JSONResponse(
            error_body("internal_error", f"the platform failed: {type(err).__name__}"), 500
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return JSONResponse(
            error_body("invalid_request", str(first.get("msg", "invalid request")), field), 422
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(err.detail)), err.status_code, getattr(err, "headers", None)
        )
