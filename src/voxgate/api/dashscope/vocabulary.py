"""DashScope custom vocabularies (hotwords): ``POST /api/v1/services/audio/asr/customization``.

One endpoint; ``input.action`` picks create / list / query / update / delete (protocol-spec §6).
Vocabularies live in the job store, scoped to the API key that created them; recognition looks them up
by id through ``services.vocabularies`` (the store implements the ``VocabularyLookup`` protocol).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from voxgate.api.auth import require_key
from voxgate.api.dashscope.transcription import read_json_object
from voxgate.api.errors import new_request_id
from voxgate.errors import InvalidParameter, ModelNotFound
from voxgate.jobs.store import JobStore, VocabularyView, owner_of
from voxgate.services import Services

router = APIRouter()

MAX_ITEMS = 500
MAX_ASCII_CHARS = 50
MAX_NON_ASCII_CHARS = 15
_PREFIX = re.compile(r"^[a-z0-9]{1,10}$")
_LANG = re.compile(r"^[a-z]{2,3}$")


def _store(request: Request) -> JobStore:
    services: Services = request.app.state.services
    return services.jobs()


def _gmt(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def validate_items(value: Any, field: str = "input.vocabulary") -> list[dict[str, Any]]:
    """Hotword items: ``text`` required, ``weight`` integer 1-5 (default 4), ``lang`` optional."""
    if not isinstance(value, list) or not value:
        raise InvalidParameter(f"{field} must be a non-empty array of hotwords", param=field)
    if len(value) > MAX_ITEMS:
        raise InvalidParameter(f"{field} holds at most {MAX_ITEMS} hotwords", param=field)
    items: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise InvalidParameter(f"{where} must be an object with 'text' and 'weight'", param=where)
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InvalidParameter(f"{where}.text is required (a non-empty string)", param=f"{where}.text")
        text = text.strip()
        limit = MAX_ASCII_CHARS if text.isascii() else MAX_NON_ASCII_CHARS
        if len(text) > limit:
            raise InvalidParameter(f"{where}.text is longer than {limit} characters", param=f"{where}.text")
        weight = item.get("weight", 4)
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 5:
            raise InvalidParameter(f"{where}.weight must be an integer from 1 to 5", param=f"{where}.weight")
        clean: dict[str, Any] = {"text": text, "weight": weight}
        lang = item.get("lang")
        if lang is not None:
            if not isinstance(lang, str) or not _LANG.match(lang):
                raise InvalidParameter(f"{where}.lang must be a language code such as 'en'", param=f"{where}.lang")
            clean["lang"] = lang
        items.append(clean)
    return items


def _string(input_: dict[str, Any], name: str) -> str:
    value = input_.get(name)
    if value is None:
        raise InvalidParameter(f"input.{name} is required", param=f"input.{name}")
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameter(f"input.{name} must be a non-empty string", param=f"input.{name}")
    return value.strip()


def _page(input_: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = input_.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameter(f"input.{name} must be an integer from {low} to {high}", param=f"input.{name}")
    return value


def _missing(vocabulary_id: str) -> InvalidParameter:
    return InvalidParameter(f"vocabulary_id '{vocabulary_id}' does not exist", param="input.vocabulary_id")


def _respond(output: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"request_id": new_request_id(), "output": output, "usage": {"count": 1}})


@router.post("/api/v1/services/audio/asr/customization")
async def customization(request: Request, api_key: str = Depends(require_key("query"))) -> JSONResponse:
    """Create, list, query, update or delete a hotword vocabulary (``input.action``)."""
    services: Services = request.app.state.services
    body = await read_json_object(request, services.settings.max_request_bytes)
    model = body.get("model", "speech-biasing")
    if not isinstance(model, str):
        raise InvalidParameter("model must be a string", param="model")
    input_ = body.get("input")
    if input_ is None:
        raise InvalidParameter("input is required", param="input")
    if not isinstance(input_, dict):
        raise InvalidParameter("input must be an object", param="input")
    action = input_.get("action")
    store = _store(request)
    owner = owner_of(api_key)

    if action == "create_vocabulary":
        target_model = _string(input_, "target_model")
        try:
            services.catalog.resolve(target_model)
        except ModelNotFound as exc:
            raise InvalidParameter(
                f"input.target_model '{target_model}' is not a model this server serves",
                param="input.target_model",
            ) from exc
        prefix = _string(input_, "prefix")
        if not _PREFIX.match(prefix):
            raise InvalidParameter("input.prefix must be 1-10 lowercase letters or digits", param="input.prefix")
        items = validate_items(input_.get("vocabulary"))
        vocabulary_id = f"vocab-{prefix}-{uuid.uuid4().hex}"
        await asyncio.to_thread(
            store.create_vocabulary,
            vocabulary_id,
            owner=owner,
            prefix=prefix,
            target_model=target_model,
            items=items,
        )
        return _respond({"vocabulary_id": vocabulary_id})

    if action == "list_vocabulary":
        prefix_value = input_.get("prefix")
        if prefix_value is not None and not isinstance(prefix_value, str):
            raise InvalidParameter("input.prefix must be a string", param="input.prefix")
        found: list[VocabularyView] = await asyncio.to_thread(
            store.list_vocabularies,
            owner=owner,
            prefix=prefix_value or None,
            page_index=_page(input_, "page_index", 0, 0, 1_000_000),
            page_size=_page(input_, "page_size", 10, 1, 100),
        )
        listed = [
            {
                "vocabulary_id": v.id,
                "gmt_create": _gmt(v.created),
                "gmt_modified": _gmt(v.modified),
                "status": "OK",
            }
            for v in found
        ]
        return _respond({"vocabulary_list": listed})

    if action == "query_vocabulary":
        vocabulary_id = _string(input_, "vocabulary_id")
        view = await asyncio.to_thread(store.get_vocabulary, vocabulary_id, owner)
        if view is None:
            raise _missing(vocabulary_id)
        return _respond(
            {
                "vocabulary": view.items,
                "target_model": view.target_model,
                "gmt_create": _gmt(view.created),
                "gmt_modified": _gmt(view.modified),
                "status": "OK",
            }
        )

    if action == "update_vocabulary":
        vocabulary_id = _string(input_, "vocabulary_id")
        items = validate_items(input_.get("vocabulary"))
        if not await asyncio.to_thread(store.update_vocabulary, vocabulary_id, owner=owner, items=items):
            raise _missing(vocabulary_id)
        return _respond({})

    if action == "delete_vocabulary":
        vocabulary_id = _string(input_, "vocabulary_id")
        if not await asyncio.to_thread(store.delete_vocabulary, vocabulary_id, owner=owner):
            raise _missing(vocabulary_id)
        return _respond({})

    if action is None:
        raise InvalidParameter("input.action is required", param="input.action")
    raise InvalidParameter(
        "input.action must be create_vocabulary, list_vocabulary, query_vocabulary, update_vocabulary or "
        "delete_vocabulary",
        param="input.action",
    )
