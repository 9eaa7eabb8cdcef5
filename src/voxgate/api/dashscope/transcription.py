"""DashScope asynchronous file transcription: submit, query, list, cancel, and the result files.

The router only parses requests and shapes responses; job state lives in the :class:`JobStore` and the
:class:`JobExecutor` does the work in worker threads.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import math
import os
import re
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse

from voxgate.api.auth import require_key
from voxgate.api.errors import new_request_id
from voxgate.errors import InvalidParameter, VoxgateError
from voxgate.jobs.params import parse_job_parameters
from voxgate.jobs.store import (
    CANCELED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    UNKNOWN,
    TaskView,
    owner_of,
)
from voxgate.services import Services
from voxgate.uploads import owns

router = APIRouter()

MAX_FILE_URLS = 100
MAX_URL_CHARS = 4096
_URL_SCHEMES = ("http", "https", "file", "oss")
_RESULT_NAME = re.compile(r"^([A-Za-z0-9_-]{20,64})\.json$")
_LIST_TIME = "%Y%m%d%H%M%S"


class ResultNotFound(VoxgateError):
    code = "ResultNotFound"
    status = 404


class TaskNotCancelable(InvalidParameter):
    code = "UnsupportedOperation"


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# -- request parsing ------------------------------------------------------------------------------
async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, read under ``max_bytes``; errors are ``InvalidParameter``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise InvalidParameter(f"the request body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise InvalidParameter(f"the request body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidParameter("the request body is empty; a JSON object is required")
    try:
        body = await asyncio.to_thread(json.loads, raw) if len(raw) > 256 * 1024 else json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidParameter(f"the request body is not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise InvalidParameter("the request body must be a JSON object")
    return body


def _check_url(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameter(f"{field} must be a non-empty URL string", param=field)
    url = value.strip()
    if len(url) > MAX_URL_CHARS:
        raise InvalidParameter(f"{field} is longer than {MAX_URL_CHARS} characters", param=field)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _URL_SCHEMES:
        raise InvalidParameter(f"{field} must be an http(s) or oss:// URL (got '{url[:80]}')", param=field)
    if scheme in ("http", "https") and not parts.hostname:
        raise InvalidParameter(f"{field} has no host", param=field)
    return url


def file_urls_of(input_: dict[str, Any], family: str) -> list[str]:
    """The request's files: ``input.file_urls`` (≤100) or ``input.file_url``."""
    if "file_urls" in input_ and input_["file_urls"] is not None:
        urls = input_["file_urls"]
        if not isinstance(urls, list) or not urls:
            raise InvalidParameter("input.file_urls must be a non-empty array of URLs", param="input.file_urls")
        if len(urls) > MAX_FILE_URLS:
            raise InvalidParameter(f"input.file_urls holds at most {MAX_FILE_URLS} URLs", param="input.file_urls")
        checked = [_check_url(u, f"input.file_urls[{i}]") for i, u in enumerate(urls)]
    elif "file_url" in input_ and input_["file_url"] is not None:
        checked = [_check_url(input_["file_url"], "input.file_url")]
    else:
        raise InvalidParameter("input.file_urls (or input.file_url) is required", param="input.file_urls")
    if family == "qwen-asr" and len(checked) > 1:
        raise InvalidParameter("this model transcribes one file per task", param="input.file_urls")
    return checked


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
@router.post("/api/v1/services/audio/asr/transcription")
async def submit_transcription(request: Request, api_key: str = Depends(require_key("submit"))) -> JSONResponse:
    """Create a file transcription task (answered at once with ``PENDING``)."""
    services = _services(request)
    body = await read_json_object(request, services.settings.max_request_bytes)
    model = body.get("model")
    if model is None:
        raise InvalidParameter("model is required", param="model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidParameter("model must be a non-empty string", param="model")
    profile = services.catalog.resolve(model, mode="file")
    input_ = body.get("input")
    if input_ is None:
        raise InvalidParameter("input is required", param="input")
    if not isinstance(input_, dict):
        raise InvalidParameter("input must be an object", param="input")
    urls = file_urls_of(input_, profile.family)
    for i, url in enumerate(urls):
        if url.lower().startswith("oss://") and not owns(url, owner_of(api_key)):
            field = f"input.file_urls[{i}]" if "file_urls" in input_ else "input.file_url"
            raise InvalidParameter(f"{field}: the uploaded file {url} does not exist on this server", param=field)
    raw_params = body.get("parameters")
    parsed = parse_job_parameters(raw_params, input_)
    stored: dict[str, Any] = dict(raw_params or {})
    if parsed.vocabulary_id:
        stored["vocabulary_id"] = parsed.vocabulary_id
        await asyncio.to_thread(services.hotwords_for, parsed.vocabulary_id, owner_of(api_key))
    store, executor = services.jobs(), services.job_executor()
    await asyncio.to_thread(executor.check_capacity)
    task_id = str(uuid.uuid4())
    await asyncio.to_thread(
        store.create_task,
        task_id,
        owner=owner_of(api_key),
        model=model,
        family=profile.family,
        parameters=stored,
        file_urls=urls,
    )
    executor.notify()
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


def _list_time(value: str | None, field: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(calendar.timegm(time.strptime(value, _LIST_TIME)))
    except ValueError as exc:
        raise InvalidParameter(f"{field} must look like 20240101000000 (UTC)", param=field) from exc


def _list_int(value: str | None, field: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise InvalidParameter(f"{field} must be an integer between {low} and {high}", param=field)
    return int(value)


@router.get("/api/v1/tasks")
async def list_tasks(request: Request, api_key: str = Depends(require_key("query"))) -> JSONResponse:
    """The caller's tasks, newest first (flat shape: ``tasks``, ``page_no``, ``page_size``, ``total``)."""
    services = _services(request)
    q = request.query_params
    page_no = _list_int(q.get("page_no"), "page_no", 1, 1, 1_000_000)
    page_size = _list_int(q.get("page_size"), "page_size", 10, 1, 100)
    status = q.get("status") or None
    if status is not None and status not in (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELED):
        raise InvalidParameter("status must be PENDING, RUNNING, SUCCEEDED, FAILED or CANCELED", param="status")
    tasks, total = await asyncio.to_thread(
        services.jobs().list_tasks,
        owner=owner_of(api_key),
        status=status,
        model=q.get("model_name") or None,
        start=_list_time(q.get("start_time"), "start_time"),
        end=_list_time(q.get("end_time"), "end_time"),
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
        raise TaskNotCancelable(f"task {task_id} is already {task.status} and cannot be canceled")
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
