"""DashScope custom vocabularies (hotwords): ``POST /api/v1/services/audio/asr/customization``.

One endpoint; ``input.action`` picks create / list / query / update / delete (protocol-spec §6).
Vocabularies live in the job store, scoped to the API key that created them; recognition looks them up
by id through ``services.vocabularies`` (the store implements the ``VocabularyLookup`` protocol).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from voxgate.api.auth import require_key
from voxgate.api.body import json_body, read_json_object
from voxgate.api.errors import new_request_id
from voxgate.errors import InvalidParameter, ModelNotFound
from voxgate.jobs.store import JobStore, VocabularyView, owner_of
from voxgate.params import LanguageCode, NonEmptyStr, RequestModel, parse
from voxgate.services import Services

router = APIRouter()

MAX_ITEMS = 500
MAX_ASCII_CHARS = 50
MAX_NON_ASCII_CHARS = 15


def _store(request: Request) -> JobStore:
    services: Services = request.app.state.services
    return services.jobs()


def _gmt(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _hotword_text(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        limit = MAX_ASCII_CHARS if text.isascii() else MAX_NON_ASCII_CHARS
        if len(text) > limit:
            raise PydanticCustomError("hotword", "is longer than {limit} characters", {"limit": limit})
    return value


class HotwordItem(RequestModel):
    """One hotword: ``text`` (≤50 ASCII or ≤15 other characters), ``weight`` 1-5 (default 4), ``lang``."""

    text: Annotated[NonEmptyStr, BeforeValidator(_hotword_text)]
    weight: Annotated[int, Field(strict=True, ge=1, le=5)] = 4
    lang: LanguageCode = None


Hotwords = Annotated[list[HotwordItem], Field(min_length=1, max_length=MAX_ITEMS)]
Action = Literal["create_vocabulary", "list_vocabulary", "query_vocabulary", "update_vocabulary", "delete_vocabulary"]


class CreateVocabulary(RequestModel):
    action: Literal["create_vocabulary"]
    target_model: NonEmptyStr
    prefix: Annotated[str, Field(pattern=r"^[a-z0-9]{1,10}$", description="1-10 lowercase letters or digits")]
    vocabulary: Hotwords


class ListVocabulary(RequestModel):
    action: Literal["list_vocabulary"]
    prefix: str | None = None
    page_index: Annotated[int, Field(strict=True, ge=0, le=1_000_000)] = 0
    page_size: Annotated[int, Field(strict=True, ge=1, le=100)] = 10


class QueryVocabulary(RequestModel):
    action: Literal["query_vocabulary"]
    vocabulary_id: NonEmptyStr


class UpdateVocabulary(RequestModel):
    action: Literal["update_vocabulary"]
    vocabulary_id: NonEmptyStr
    vocabulary: Hotwords


class DeleteVocabulary(RequestModel):
    action: Literal["delete_vocabulary"]
    vocabulary_id: NonEmptyStr


VocabularyAction = CreateVocabulary | ListVocabulary | QueryVocabulary | UpdateVocabulary | DeleteVocabulary


class CustomizationRequest(RequestModel):
    """``POST /api/v1/services/audio/asr/customization``: ``input.action`` picks the operation."""

    model: str = "speech-biasing"
    input: Annotated[VocabularyAction, Field(discriminator="action")]


class _Action(RequestModel):
    action: Action


class _Envelope(RequestModel):
    model: str = "speech-biasing"
    input: _Action


_BY_ACTION: dict[str, type[RequestModel]] = {
    "create_vocabulary": CreateVocabulary,
    "list_vocabulary": ListVocabulary,
    "query_vocabulary": QueryVocabulary,
    "update_vocabulary": UpdateVocabulary,
    "delete_vocabulary": DeleteVocabulary,
}


def parse_customization(body: dict[str, Any]) -> VocabularyAction:
    """The request's action, validated: first which action (``input.action``), then its fields."""
    action = parse(_Envelope, body).input.action
    return cast(VocabularyAction, parse(_BY_ACTION[action], body["input"], prefix="input"))


def _items(hotwords: list[HotwordItem]) -> list[dict[str, Any]]:
    return [item.model_dump(exclude_none=True) for item in hotwords]


def _missing(vocabulary_id: str) -> InvalidParameter:
    return InvalidParameter(f"vocabulary_id '{vocabulary_id}' does not exist", param="input.vocabulary_id")


def _respond(output: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"request_id": new_request_id(), "output": output, "usage": {"count": 1}})


@router.post("/api/v1/services/audio/asr/customization", openapi_extra=json_body(CustomizationRequest))
async def customization(request: Request, api_key: str = Depends(require_key("query"))) -> JSONResponse:
    """Create, list, query, update or delete a hotword vocabulary (``input.action``)."""
    services: Services = request.app.state.services
    call = parse_customization(await read_json_object(request, services.settings.max_request_bytes))
    store = _store(request)
    owner = owner_of(api_key)

    if isinstance(call, CreateVocabulary):
        try:
            services.catalog.resolve(call.target_model)
        except ModelNotFound as exc:
            raise InvalidParameter(
                f"input.target_model '{call.target_model}' is not a model this server serves",
                param="input.target_model",
            ) from exc
        vocabulary_id = f"vocab-{call.prefix}-{uuid.uuid4().hex}"
        await asyncio.to_thread(
            store.create_vocabulary,
            vocabulary_id,
            owner=owner,
            prefix=call.prefix,
            target_model=call.target_model,
            items=_items(call.vocabulary),
        )
        return _respond({"vocabulary_id": vocabulary_id})

    if isinstance(call, ListVocabulary):
        found: list[VocabularyView] = await asyncio.to_thread(
            store.list_vocabularies,
            owner=owner,
            prefix=call.prefix or None,
            page_index=call.page_index,
            page_size=call.page_size,
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

    if isinstance(call, QueryVocabulary):
        view = await asyncio.to_thread(store.get_vocabulary, call.vocabulary_id, owner)
        if view is None:
            raise _missing(call.vocabulary_id)
        return _respond(
            {
                "vocabulary": view.items,
                "target_model": view.target_model,
                "gmt_create": _gmt(view.created),
                "gmt_modified": _gmt(view.modified),
                "status": "OK",
            }
        )

    if isinstance(call, UpdateVocabulary):
        items = _items(call.vocabulary)
        if not await asyncio.to_thread(store.update_vocabulary, call.vocabulary_id, owner=owner, items=items):
            raise _missing(call.vocabulary_id)
        return _respond({})

    if not await asyncio.to_thread(store.delete_vocabulary, call.vocabulary_id, owner=owner):
        raise _missing(call.vocabulary_id)
    return _respond({})
