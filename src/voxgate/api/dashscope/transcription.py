"""DashScope asynchronous file transcription: submit, query, list, cancel, and the result files.

The router only parses requests and shapes responses; job state lives in the :class:`JobStore` and the
:class:`JobExecutor` does the work in worker threads.
"""

from __future__ import annotations

import asyncio
import calendar
import math
import os
import re
import time
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from voxgate.api.auth import require_key
from voxgate.api.body import json_body, read_json_object
from voxgate.api.errors import new_request_id
from voxgate.errors import InvalidParameter, ResultNotFound, UnsupportedOperation
from voxgate.jobs.params import TranscriptionParameters
from voxgate.jobs.store import (
    CANCELED,
    FAILED,
    PENDING,
    SUCCEEDED,
    TERMINAL,
    UNKNOWN,
    TaskView,
    owner_of,
)
from voxgate.params import NonEmptyStr, RequestModel, parse
from voxgate.services import Services
from voxgate.uploads import owns

router = APIRouter()

MAX_FILE_URLS = 100
MAX_URL_CHARS = 4096
_URL_SCHEMES = ("http", "https", "file", "oss")
_RESULT_NAME = re.compile(r"^([A-Za-z0-9_-]{20,64})\.json$")
_LIST_TIME = "%Y%m%d%H%M%S"


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# -- requests -------------------------------------------------------------------------------------
def _file_url(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("url", "must be a non-empty URL string")
    url = value.strip()
    if len(url) > MAX_URL_CHARS:
        raise PydanticCustomError("url", "is longer than {n} characters", {"n": MAX_URL_CHARS})
    parts = urlsplit(url)
    if parts.scheme.lower() not in _URL_SCHEMES:
        raise PydanticCustomError("url", "must be an http(s) or oss:// URL (got '{url}')", {"url": url[:80]})
    if parts.scheme.lower() in ("http", "https") and not parts.hostname:
        raise PydanticCustomError("url", "has no host")
    return url


FileUrl = Annotated[str, BeforeValidator(_file_url), WithJsonSchema({"type": "string", "format": "uri"})]


class TranscriptionInput(RequestModel):
    file_urls: Annotated[list[FileUrl], Field(min_length=1, max_length=MAX_FILE_URLS)] | None = None
    file_url: FileUrl | None = None
    vocabulary_id: NonEmptyStr | None = None

    def urls(self) -> list[tuple[str, str]]:
        """(field, URL) of every file: ``file_urls`` (≤100) or ``file_url``."""
        if self.file_urls is not None:
            return [(f"input.file_urls[{i}]", url) for i, url in enumerate(self.file_urls)]
        if self.file_url is not None:
            return [("input.file_url", self.file_url)]
        raise InvalidParameter("input.file_urls (or input.file_url) is required", param="input.file_urls")


class TranscriptionRequest(RequestModel):
    """``POST /api/v1/services/audio/asr/transcription``."""

    model: NonEmptyStr
    input: TranscriptionInput
    parameters: TranscriptionParameters = Field(default_factory=TranscriptionParameters)


# -- response shaping -----------------------------------------------------------------------------
def _clock(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def result_url(base: str, token: str) -> str:
    return f"{base}/api/v1/results/{token}.json"


def base_url(services: Services, request: Request) -> str:
    return (services.settings.public_url or str(request.base_url)).rstrip("/")


def task_body(task: TaskView, base: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``output`` and ``usage`` of a task query (protocol-spec §4.2), in the model family's own shape."""
    output: dict[str, Any] = {
        "task_id": task.id,
        "task_status": task.status,
        "submit_time": _clock(task.submit_time),
    }
    if task.scheduled_time is not None:
        output["scheduled_time"] = _clock(task.scheduled_time)
    if task.status in TERMINAL and task.end_time is not None:
        output["end_time"] = _clock(task.end_time)
    results: list[dict[str, Any]] = []
    for f in task.files:
        item: dict[str, Any] = {"file_url": f.file_url}
        if f.status == SUCCEEDED and f.result_token:
            item["transcription_url"] = result_url(base, f.result_token)
        item["subtask_status"] = f.status
        if f.status == FAILED:
            item["code"] = f.code or "InternalError"
            item["message"] = f.message or ""
        results.append(item)
    seconds = sum(f.duration_ms or 0 for f in task.files if f.status == SUCCEEDED) / 1000
    billed = math.ceil(seconds) if seconds else 0
    usage: dict[str, Any] | None = None
    if task.family == "qwen-asr":
        done = next((r for r in results if "transcription_url" in r), None)
        if done is not None:
            output["result"] = {"transcription_url": done["transcription_url"]}
        output["results"] = results
        if task.status == SUCCEEDED:
            usage = {"seconds": billed}
    else:
        output["results"] = results
        output["task_metrics"] = {
            "TOTAL": len(task.files),
            "SUCCEEDED": sum(f.status == SUCCEEDED for f in task.files),
            "FAILED": sum(f.status == FAILED for f in task.files),
        }
        if task.status == SUCCEEDED:
            usage = {"duration": billed}
    if task.status == FAILED:
        output["code"] = task.code or "InternalError"
        output["message"] = task.message or "the task failed"
    elif task.status == CANCELED:
        output["message"] = task.message or "the task was canceled"
    return output, usage


def envelope(output: dict[str, Any], usage: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"request_id": new_request_id(), "output": output}
    if usage is not None:
        body["usage"] = usage
    return JSONResponse(body)


# -- endpoints ------------------------------------------------------------------------------------
@router.post("/api/v1/services/audio/asr/transcription", openapi_extra=json_body(TranscriptionRequest))
async def submit_transcription(request: Request, api_key: str = Depends(require_key("submit"))) -> JSONResponse:
    """Create a file transcription task (answered at once with ``PENDING``)."""
    services = _services(request)
    body = await read_json_object(request, services.settings.max_request_bytes)
    submitted = parse(TranscriptionRequest, body)
    profile = services.catalog.resolve(submitted.model, mode="file")
    owner = owner_of(api_key)
    files = submitted.input.urls()
    if profile.family == "qwen-asr" and len(files) > 1:
        raise InvalidParameter("input.file_urls: this model transcribes one file per task", param="input.file_urls")
    for field, url in files:
        if url.lower().startswith("oss://") and not owns(url, owner):
            raise InvalidParameter(f"{field}: the uploaded file {url} does not exist on this server", param=field)
    parsed = submitted.parameters.to_job(submitted.input.vocabulary_id)
    stored: dict[str, Any] = dict(body.get("parameters") or {})
    if parsed.vocabulary_id:
        stored["vocabulary_id"] = parsed.vocabulary_id
        await asyncio.to_thread(services.hotwords_for, parsed.vocabulary_id, owner)
    store, executor = services.jobs(), services.job_executor()
    await asyncio.to_thread(executor.check_capacity)
    task_id = str(uuid.uuid4())
    await asyncio.to_thread(
        store.create_task,
        task_id,
        owner=owner,
        model=submitted.model,
        family=profile.family,
        parameters=stored,
        file_urls=[url for _field, url in files],
    )
    await asyncio.to_thread(executor.submitted, task_id)
    return envelope({"task_id": task_id, "task_status": PENDING})


@router.get("/api/v1/tasks/{task_id}")
async def query_task(task_id: str, request: Request, api_key: str = Depends(require_key("query"))) -> JSONResponse:
    """A task's status and, when done, its per-file results. Unknown ids answer ``UNKNOWN``."""
    services = _services(request)
    task = await asyncio.to_thread(services.jobs().get_task, task_id)
    if task is None or task.owner != owner_of(api_key):
        return envelope({"task_id": task_id, "task_status": UNKNOWN})
    output, usage = task_body(task, base_url(services, request))
    return envelope(output, usage)


def _list_time(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(calendar.timegm(time.strptime(str(value), _LIST_TIME)))
    except ValueError:
        raise PydanticCustomError("list_time", "must look like 20240101000000 (UTC)") from None


ListTime = Annotated[float | None, BeforeValidator(_list_time), WithJsonSchema({"type": "string"})]


class ListTasksQuery(RequestModel):
    """Query of ``GET /api/v1/tasks``; empty values take the default."""

    page_no: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    page_size: Annotated[int, Field(ge=1, le=100)] = 10
    status: Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED"] | None = None
    model_name: str | None = None
    start_time: ListTime = None
    end_time: ListTime = None

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != ""}
        return data


@router.get("/api/v1/tasks")
async def list_tasks(
    request: Request, query: Annotated[ListTasksQuery, Query()], api_key: str = Depends(require_key("query"))
) -> JSONResponse:
    """The caller's tasks, newest first (flat shape: ``tasks``, ``page_no``, ``page_size``, ``total``)."""
    services = _services(request)
    page_no, page_size = query.page_no, query.page_size
    tasks, total = await asyncio.to_thread(
        services.jobs().list_tasks,
        owner=owner_of(api_key),
        status=query.status,
        model=query.model_name,
        start=query.start_time,
        end=query.end_time,
        page_no=page_no,
        page_size=page_size,
    )
    base = base_url(services, request)
    items = []
    for task in tasks:
        output, _usage = task_body(task, base)
        output.pop("results", None)
        output.pop("result", None)
        output["model_name"] = task.model
        items.append(output)
    return JSONResponse(
        {
            "request_id": new_request_id(),
            "tasks": items,
            "page_no": page_no,
            "page_size": page_size,
            "total": total,
        }
    )


@router.post("/api/v1/tasks/{task_id}/cancel")
async def cancel_task(task_id: str, request: Request, api_key: str = Depends(require_key("query"))) -> JSONResponse:
    """Cancel a PENDING task at once; a RUNNING one stops at its next checkpoint."""
    services = _services(request)
    store = services.jobs()
    task = await asyncio.to_thread(store.get_task, task_id)
    if task is None or task.owner != owner_of(api_key):
        return envelope({"task_id": task_id, "task_status": UNKNOWN})
    if task.status in TERMINAL:
        raise UnsupportedOperation(f"task {task_id} is already {task.status} and cannot be canceled")
    status = await asyncio.to_thread(store.cancel_task, task_id)
    return envelope({"task_id": task_id, "task_status": status or UNKNOWN})


@router.get("/api/v1/results/{name}")
async def download_result(name: str, request: Request) -> FileResponse:
    """A transcription result JSON (no authentication: the name is the secret; expires after retention)."""
    services = _services(request)
    match = _RESULT_NAME.match(name)
    path = await asyncio.to_thread(services.jobs().result_path, match.group(1)) if match else None
    if path is None or not await asyncio.to_thread(os.path.isfile, path):
        raise ResultNotFound("no such result (it may have expired)")
    return FileResponse(path, media_type="application/json", headers={"Cache-Control": "private, max-age=3600"})
