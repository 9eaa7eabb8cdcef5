"""One mapping from internal errors to each protocol's error shape."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from voxgate.api.sse import dashscope_event
from voxgate.errors import VoxgateError
from voxgate.logs import REQUEST_ID

log = logging.getLogger("voxgate.api")

_STATUS_CODES = {
    400: "InvalidParameter",
    401: "InvalidApiKey",
    403: "AccessDenied",
    404: "NotFound",
    405: "InvalidParameter",
    413: "InvalidParameter",
    415: "InvalidParameter",
    429: "Throttling",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def new_request_id() -> str:
    """The id of the request being handled (its ``X-Request-Id``), or a new one outside a request."""
    return REQUEST_ID.get() or str(uuid.uuid4())


def dashscope_error_body(code: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """The native DashScope HTTP error envelope."""
    return {"request_id": request_id or new_request_id(), "code": code, "message": message}


def openai_error_body(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """The OpenAI-style error envelope used on /v1 and /compatible-mode/v1."""
    kind = "invalid_request_error" if code not in ("InternalError", "ServiceUnavailable") else "server_error"
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/") or path.startswith("/compatible-mode/")


def error_response(request: Request, status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    """An error in the shape the path's protocol speaks."""
    if is_openai_path(request.url.path):
        return JSONResponse(openai_error_body(code, message, param), status_code=status)
    return JSONResponse(dashscope_error_body(code, message), status_code=status)


def sse_error_event(code: str, message: str, request_id: str | None = None, status: int = 400) -> str:
    """A DashScope SSE error event (``event:error`` exactly, no space)."""
    return dashscope_event(1, dashscope_error_body(code, message, request_id), event="error", status=status)


def describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    """A human message naming the first offending field."""
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "header", "path")]
    field = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    return (f"{field}: {msg}" if field else msg), field


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers so no request ever ends in a traceback or a non-protocol error body."""

    @app.exception_handler(VoxgateError)
    async def _voxgate(request: Request, exc: VoxgateError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = describe_validation(exc)
        return error_response(request, 400, "InvalidParameter", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "InvalidParameter")
        return error_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request, 500, "InternalError", "internal error; the request was not completed")
