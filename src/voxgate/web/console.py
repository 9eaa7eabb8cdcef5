"""``/``: the web console (static files shipped in this package), its model list and job progress."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from voxgate.api.auth import require_key
from voxgate.errors import InvalidParameter
from voxgate.jobs.store import owner_of
from voxgate.services import Services

router = APIRouter(include_in_schema=False)

ASSETS = Path(__file__).resolve().parent
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page sets its own policy: everything from this server, nothing from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: http: https:; "
        "img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


def _asset(name: str) -> Path | None:
    path = (ASSETS / name).resolve()
    if path.parent != ASSETS or path.suffix not in MEDIA_TYPES or not path.is_file():
        return None
    return path


@router.get("/")
async def index() -> Response:
    path = _asset("index.html")
    assert path is not None
    return FileResponse(path, media_type=MEDIA_TYPES[".html"], headers=SECURITY_HEADERS)


@router.get("/console")
async def console_root() -> RedirectResponse:
    return RedirectResponse("/")


@router.get("/console/{name}")
async def asset(name: str) -> Response:
    path = _asset(name)
    if path is None:
        return JSONResponse({"code": "NotFound", "message": f"no console asset '{name}'"}, status_code=404)
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=SECURITY_HEADERS)


@router.get("/console/api/models")
async def models(request: Request) -> JSONResponse:
    """Model names by use, without dated snapshots: ``realtime`` (run-task models taking the page's 16 kHz audio),
    ``session`` (Qwen-ASR models on the session protocol) and ``file`` (file jobs)."""
    services: Services = request.app.state.services
    catalog = services.catalog
    by_mode: dict[str, list[str]] = {"realtime": [], "session": [], "file": []}
    for name in catalog.names():
        profile = catalog.resolve(name)
        if SNAPSHOT.search(name):
            continue
        takes_16k = profile.sample_rates is None or 16000 in profile.sample_rates
        if profile.mode == "realtime" and profile.family not in ("qwen-asr", "qwen-omni") and takes_16k:
            by_mode["realtime"].append(name)
        elif profile.mode == "realtime" and profile.family == "qwen-asr":
            by_mode["session"].append(name)
        elif profile.mode == "file":
            by_mode["file"].append(name)
    return JSONResponse(by_mode)


@router.get("/console/api/tasks/{task_id}/progress")
async def progress(request: Request, task_id: str, key: str = Depends(require_key())) -> JSONResponse:
    """Audio decoded so far for a file job of the caller: ``{"processed_ms", "duration_ms"}``."""
    services: Services = request.app.state.services
    task = await asyncio.to_thread(services.jobs().get_task, task_id)
    if task is None or task.owner != owner_of(key):
        raise InvalidParameter(f"task '{task_id}' does not exist", param="task_id")
    known = [f.duration_ms for f in task.files if f.duration_ms]
    return JSONResponse(
        {
            "status": task.status,
            "processed_ms": sum(f.processed_ms for f in task.files),
            "duration_ms": sum(known) if len(known) == len(task.files) else None,
        }
    )
