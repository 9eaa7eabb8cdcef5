"""The one HTTP body reader (one size rule: HTTP 413 above ``max_request_bytes``) and request schemas in OpenAPI."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal, TypeVar

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import ClientDisconnect, Request

from voxgate.errors import InvalidParameter, PayloadTooLarge
from voxgate.params import parse

M = TypeVar("M", bound=BaseModel)


# -- the body reader ------------------------------------------------------------------------------
async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The JSON object in the request body, read under ``max_bytes`` (larger: :class:`PayloadTooLarge`, 413)."""
    too_large = f"the request body is larger than the {max_bytes / 1024**2:g} MB limit"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(too_large)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(too_large)
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise InvalidParameter("the client closed the connection before the body was complete") from exc
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidParameter("the request body is empty; a JSON object is required")
    try:
        body = json.loads(raw) if size < 256 * 1024 else await asyncio.to_thread(json.loads, raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidParameter("the request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidParameter("the request body must be a JSON object")
    return body


async def read_request(request: Request, model: type[M], max_bytes: int) -> M:
    """Read the JSON body and validate it as ``model``."""
    return parse(model, await read_json_object(request, max_bytes))


# -- OpenAPI --------------------------------------------------------------------------------------
_SCHEMA_MODELS: dict[str, type[BaseModel]] = {}
_REF = "#/components/schemas/{model}"
SM = TypeVar("SM", bound=BaseModel)


def websocket_message(model: type[SM]) -> type[SM]:
    """Class decorator: a WebSocket message model, listed in the OpenAPI components like the bodies."""
    _SCHEMA_MODELS[model.__name__] = model
    return model


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route whose JSON body is ``model`` (read by :func:`read_request`)."""
    _SCHEMA_MODELS[model.__name__] = model
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def form_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route reading a ``multipart/form-data`` body described by ``model``."""
    _SCHEMA_MODELS[model.__name__] = model
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def install_request_schemas(app: FastAPI) -> None:
    """Add the request models named by :func:`json_body` / :func:`form_body` to the app's OpenAPI schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            models: list[tuple[type[BaseModel], Literal["validation"]]] = [
                (m, "validation") for m in _SCHEMA_MODELS.values()
            ]
            _refs, defs = models_json_schema(models, ref_template=_REF)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
