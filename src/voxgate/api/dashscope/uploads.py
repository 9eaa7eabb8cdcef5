"""Temporary file uploads as the DashScope SDK performs them for local files (``file://`` inputs).

1. ``GET /api/v1/uploads?action=getPolicy&model=...`` (API key) returns a signed, short-lived upload policy
   whose ``upload_host`` points back to this server.
2. ``POST /api/v1/uploads`` takes the OSS-style multipart form (``policy``, ``Signature``, ``key``, ``file``);
   the policy signature is the credential. The file lands at ``data_dir/uploads/<key>``.
3. Requests then name the file as ``oss://<key>``; :func:`voxgate.uploads.resolve_oss` maps that back to the
   local path. The key holds the owner tag of the API key that asked for the policy: only that key can use it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import AliasChoices, BeforeValidator, Field, WithJsonSchema

from voxgate.api.audio_source import MultipartForm, read_multipart, temp_destination
from voxgate.api.auth import require_key
from voxgate.api.body import form_body
from voxgate.api.errors import new_request_id
from voxgate.config import Settings
from voxgate.errors import AlreadyExists, InvalidParameter, UploadDenied
from voxgate.jobs.store import owner_of
from voxgate.params import Flag, RequestModel, parse
from voxgate.services import Services
from voxgate.uploads import key_path, upload_dir_for

log = logging.getLogger("voxgate.uploads")

router = APIRouter()

UPLOAD_PATH = "/api/v1/uploads"
POLICY_TTL_S = 300
ACCESS_KEY_ID = "voxgate"


# -- policies -------------------------------------------------------------------------------------
def make_policy(services: Services, upload_host: str, owner: str) -> dict[str, Any]:
    """A fresh upload policy (the ``data`` of the getPolicy answer) for a folder of ``owner``."""
    upload_dir = upload_dir_for(owner)
    max_bytes = services.settings.max_file_bytes
    expires = datetime.fromtimestamp(time.time() + POLICY_TTL_S, tz=UTC)
    document = {
        "expiration": expires.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "conditions": [["starts-with", "$key", upload_dir + "/"], ["content-length-range", 0, max_bytes]],
    }
    policy = base64.b64encode(json.dumps(document, separators=(",", ":")).encode()).decode()
    return {
        "policy": policy,
        "signature": services.signer().sign(policy),
        "upload_dir": upload_dir,
        "upload_host": upload_host,
        "expire_in_seconds": POLICY_TTL_S,
        "max_file_size_mb": max(1, max_bytes // 1024**2),
        "capacity_limit_mb": max(1, max_bytes // 1024**2),
        "oss_access_key_id": ACCESS_KEY_ID,
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    }


def _status(value: Any) -> str:
    """``success_action_status``: 200, 201 or 204; anything else answers 204, as OSS does."""
    return str(value) if str(value) in ("200", "201", "204") else "204"


class UploadFields(RequestModel):
    """The text fields of the OSS-style upload form, sent before the ``file`` part."""

    policy: str = ""
    signature: str = Field("", validation_alias=AliasChoices("Signature", "signature"))
    key: str = ""
    forbid_overwrite: Flag = Field(False, validation_alias="x-oss-forbid-overwrite")
    success_action_status: Annotated[str, BeforeValidator(_status)] = "204"


class UploadForm(UploadFields):
    """``multipart/form-data`` of ``POST /api/v1/uploads`` (OSS PostObject shape; ``file`` last)."""

    file: Annotated[bytes, WithJsonSchema({"type": "string", "format": "binary"})]


def upload_fields(form: MultipartForm) -> UploadFields:
    return parse(UploadFields, {name: values[-1] for name, values in form.fields.items() if values})


def check_policy(services: Services, form: MultipartForm) -> str:
    """Verify the signed policy of an upload form; return the key it allows."""
    fields = upload_fields(form)
    if not fields.policy or not fields.signature:
        raise UploadDenied(
            "the upload form needs the 'policy' and 'Signature' fields of GET /api/v1/uploads?action=getPolicy, "
            "before the 'file' part"
        )
    if not services.signer().verify(fields.policy, fields.signature):
        raise UploadDenied("the upload policy signature does not match")
    try:
        document = json.loads(base64.b64decode(fields.policy))
        expires = datetime.strptime(document["expiration"], "%Y-%m-%dT%H:%M:%S.000Z").replace(tzinfo=UTC)
        prefix = next(c[2] for c in document["conditions"] if c[0] == "starts-with" and c[1] == "$key")
    except (ValueError, KeyError, TypeError, StopIteration) as exc:
        raise UploadDenied("the upload policy is malformed") from exc
    if expires.timestamp() < time.time():
        raise UploadDenied("the upload policy has expired; request a new one")
    if not fields.key:
        raise InvalidParameter("the upload form needs a 'key' field before the file", param="key")
    if not fields.key.startswith(prefix) or len(fields.key) == len(prefix):
        raise UploadDenied(f"the key must start with the policy's upload_dir '{prefix}'")
    return fields.key


def _public_base(request: Request, settings: Settings) -> str:
    return (settings.public_url or str(request.base_url)).rstrip("/")


# -- routes ---------------------------------------------------------------------------------------
class PolicyQuery(RequestModel):
    """Query of ``GET /api/v1/uploads``."""

    action: Literal["getPolicy"]
    model: str = ""


@router.get(UPLOAD_PATH)
async def get_policy(
    request: Request, query: Annotated[PolicyQuery, Query()], api_key: str = Depends(require_key())
) -> JSONResponse:
    """``action=getPolicy``: a signed upload policy for the next ``POST``."""
    services: Services = request.app.state.services
    host = _public_base(request, services.settings) + UPLOAD_PATH
    data = make_policy(services, host, owner_of(api_key))
    return JSONResponse({"request_id": new_request_id(), "data": data})


@router.post(UPLOAD_PATH, openapi_extra=form_body(UploadForm))
async def upload(request: Request) -> Response:
    """OSS-style form upload authorised by the signed policy (the ``file`` part must come last)."""
    services: Services = request.app.state.services
    settings = services.settings
    target: dict[str, Path] = {}
    temporary = temp_destination(settings, prefix="oss-")

    def destination(form: MultipartForm, filename: str | None) -> Path:
        key = check_policy(services, form)
        path = key_path(settings, key)
        if path.exists() and upload_fields(form).forbid_overwrite:
            raise AlreadyExists(f"an upload with key '{key}' already exists")
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
    return Response(status_code=int(upload_fields(form).success_action_status))
