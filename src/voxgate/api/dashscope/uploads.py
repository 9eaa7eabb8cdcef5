"""Temporary file uploads as the DashScope SDK performs them for local files (``file://`` inputs).

1. ``GET /api/v1/uploads?action=getPolicy&model=...`` (API key) returns a signed, short-lived upload policy
   whose ``upload_host`` points back to this server.
2. ``POST /api/v1/uploads`` takes the OSS-style multipart form (``policy``, ``Signature``, ``key``, ``file``);
   the policy signature is the credential. The file lands at ``data_dir/uploads/<key>``.
3. Requests then name the file as ``oss://<key>``; :func:`resolve_oss` maps that back to the local path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from voxgate.api.audio_source import MultipartForm, read_multipart, temp_destination
from voxgate.api.auth import require_key
from voxgate.api.errors import new_request_id
from voxgate.config import Settings
from voxgate.errors import InvalidParameter, VoxgateError
from voxgate.services import Services

log = logging.getLogger("voxgate.uploads")

router = APIRouter()

UPLOAD_PATH = "/api/v1/uploads"
POLICY_TTL_S = 300
KEY_PREFIX = "dashscope-instant"
MAX_KEY_CHARS = 1024
ACCESS_KEY_ID = "voxgate"
_SECRET_EXTRA = "upload_policy_secret"
_SWEEPER_EXTRA = "upload_sweeper"


class UploadDenied(VoxgateError):
    """The upload form is unsigned, tampered with, or its policy has expired."""

    code = "AccessDenied"
    status = 403


class UploadExists(VoxgateError):
    code = "FileAlreadyExists"
    status = 409


# -- keys and paths -------------------------------------------------------------------------------
def uploads_root(settings: Settings) -> Path:
    return settings.data_dir / "uploads"


def key_path(settings: Settings, key: str) -> Path:
    """Local path of an upload key; refuses anything that could leave the uploads folder."""
    if not key or len(key) > MAX_KEY_CHARS or key.startswith("/"):
        raise InvalidParameter("invalid upload key", param="key")
    if any(ch in key for ch in "\\\x00") or any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise InvalidParameter("invalid upload key: control characters or backslashes", param="key")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidParameter("invalid upload key: empty, '.' or '..' path segments", param="key")
    root = uploads_root(settings).resolve()
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root):
        raise InvalidParameter("invalid upload key", param="key")
    return path


def resolve_oss(settings: Settings, url: str) -> Path:
    """The local file behind an ``oss://<key>`` URL returned by an upload to this server."""
    if not isinstance(url, str) or not url.startswith("oss://"):
        raise InvalidParameter("expected an oss:// URL", param="audio")
    key = url[len("oss://") :]
    candidates = [key] if unquote(key) == key else [key, unquote(key)]
    for candidate in candidates:
        try:
            path = key_path(settings, candidate)
        except InvalidParameter as exc:
            raise InvalidParameter(f"invalid oss:// URL: {exc.message}", param="audio") from exc
        if path.is_file():
            return path
    hours = settings.result_retention_hours
    raise InvalidParameter(
        f"the uploaded file {url} does not exist on this server (uploads are kept {hours:g} h)", param="audio"
    )


# -- policies -------------------------------------------------------------------------------------
def _secret(services: Services) -> bytes:
    """The policy-signing key, shared by every worker process through a file in ``data_dir``."""
    cached = services.extras.get(_SECRET_EXTRA)
    if isinstance(cached, bytes):
        return cached
    path = services.settings.data_dir / "upload-policy.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = bytes.fromhex(path.read_text().strip())
    else:
        secret = secrets.token_bytes(32)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret.hex())
    services.extras[_SECRET_EXTRA] = secret
    return secret


def _sign(secret: bytes, policy: str) -> str:
    return base64.b64encode(hmac.new(secret, policy.encode(), hashlib.sha1).digest()).decode()


def make_policy(services: Services, upload_host: str) -> dict[str, Any]:
    """A fresh upload policy (the ``data`` of the getPolicy answer)."""
    upload_dir = f"{KEY_PREFIX}/{uuid.uuid4().hex}"
    max_bytes = services.settings.max_file_bytes
    expires = datetime.fromtimestamp(time.time() + POLICY_TTL_S, tz=UTC)
    document = {
        "expiration": expires.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "conditions": [["starts-with", "$key", upload_dir + "/"], ["content-length-range", 0, max_bytes]],
    }
    policy = base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()
    return {
        "policy": policy,
        "signature": _sign(_secret(services), policy),
        "upload_dir": upload_dir,
        "upload_host": upload_host,
        "expire_in_seconds": POLICY_TTL_S,
        "max_file_size_mb": max(1, max_bytes // 1024**2),
        "capacity_limit_mb": max(1, max_bytes // 1024**2),
        "oss_access_key_id": ACCESS_KEY_ID,
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    }


def check_policy(services: Services, form: MultipartForm) -> str:
    """Verify the signed policy of an upload form; return the key it allows."""
    policy = form.get("policy") or ""
    signature = form.get("Signature") or form.get("signature") or ""
    key = form.get("key") or ""
    if not policy or not signature:
        raise UploadDenied(
            "the upload form needs the 'policy' and 'Signature' fields of GET /api/v1/uploads?action=getPolicy, "
            "before the 'file' part"
        )
    if not hmac.compare_digest(_sign(_secret(services), policy), signature):
        raise UploadDenied("the upload policy signature does not match")
    try:
        document = json.loads(base64.b64decode(policy))
        expires = datetime.strptime(document["expiration"], "%Y-%m-%dT%H:%M:%S.000Z").replace(tzinfo=UTC)
        prefix = next(c[2] for c in document["conditions"] if c[0] == "starts-with" and c[1] == "$key")
    except (ValueError, KeyError, TypeError, StopIteration) as exc:
        raise UploadDenied("the upload policy is malformed") from exc
    if expires.timestamp() < time.time():
        raise UploadDenied("the upload policy has expired; request a new one")
    if not key:
        raise InvalidParameter("the upload form needs a 'key' field before the file", param="key")
    if not key.startswith(prefix) or len(key) == len(prefix):
        raise UploadDenied(f"the key must start with the policy's upload_dir '{prefix}'")
    return key


def _public_base(request: Request, settings: Settings) -> str:
    return (settings.public_url or str(request.base_url)).rstrip("/")


# -- routes ---------------------------------------------------------------------------------------
@router.get(UPLOAD_PATH, dependencies=[Depends(require_key())])
async def get_policy(request: Request, action: str = "", model: str = "") -> JSONResponse:
    """``action=getPolicy``: a signed upload policy for the next ``POST``."""
    if action != "getPolicy":
        raise InvalidParameter(f"unsupported action '{action}': only getPolicy", param="action")
    services: Services = request.app.state.services
    host = _public_base(request, services.settings) + UPLOAD_PATH
    data = await asyncio.to_thread(make_policy, services, host)
    return JSONResponse({"request_id": new_request_id(), "data": data})


@router.post(UPLOAD_PATH)
async def upload(request: Request) -> Response:
    """OSS-style form upload authorised by the signed policy (the ``file`` part must come last)."""
    services: Services = request.app.state.services
    settings = services.settings
    target: dict[str, Path] = {}
    temporary = temp_destination(settings, prefix="oss-")

    def destination(form: MultipartForm, filename: str | None) -> Path:
        key = check_policy(services, form)
        path = key_path(settings, key)
        if path.exists() and (form.get("x-oss-forbid-overwrite") or "").lower() == "true":
            raise UploadExists(f"an upload with key '{key}' already exists")
        target["path"] = path
        return temporary(form, filename)

    form = await read_multipart(request, destination=destination, max_file_bytes=settings.max_file_bytes)
    if form.file_path is None:
        raise InvalidParameter("the upload form has no 'file' part", param="file")
    final = target["path"]
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(form.file_path, final)
    except OSError:
        form.file_path.unlink(missing_ok=True)
        raise
    status = form.get("success_action_status") or "204"
    return Response(status_code=int(status) if status in ("200", "201", "204") else 204)


# -- retention ------------------------------------------------------------------------------------
def sweep_uploads(settings: Settings, now: float | None = None) -> int:
    """Delete uploads (and stale partial uploads) older than the retention period; returns the count."""
    cutoff = (now or time.time()) - settings.result_retention_hours * 3600
    removed = 0
    for base, pattern in ((uploads_root(settings), "*"), (settings.data_dir / "tmp", "oss-*")):
        if not base.is_dir():
            continue
        for path in base.rglob(pattern):
            with contextlib.suppress(OSError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
    return removed


async def _sweep_forever(settings: Settings) -> None:
    while True:
        try:
            removed = await asyncio.to_thread(sweep_uploads, settings)
            if removed:
                log.info("removed %d expired uploads", removed)
        except Exception:
            log.exception("upload sweep failed")
        await asyncio.sleep(3600)


async def on_startup(services: Services) -> None:
    await asyncio.to_thread(_secret, services)
    services.extras[_SWEEPER_EXTRA] = asyncio.create_task(_sweep_forever(services.settings))


async def on_shutdown(services: Services) -> None:
    task = services.extras.pop(_SWEEPER_EXTRA, None)
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
