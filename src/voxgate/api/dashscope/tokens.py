"""``POST /api/v1/tokens?expire_in_seconds=N``: a temporary API key for browsers and apps.

Answers ``{"token": "st-…", "expires_at": <Unix seconds>}``. The token is accepted wherever the issuing key
is (every HTTP route and WebSocket) until it expires; it cannot issue further tokens.
"""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from voxgate.api import temporary_keys
from voxgate.api.auth import bearer_token, require_key
from voxgate.errors import AccessDenied
from voxgate.services import Services

router = APIRouter()


@router.post("/api/v1/tokens")
async def create_token(
    request: Request,
    identity: Annotated[str, Depends(require_key("submit"))],
    expire_in_seconds: Annotated[
        int, Query(ge=temporary_keys.MIN_LIFETIME_S, le=temporary_keys.MAX_LIFETIME_S)
    ] = temporary_keys.DEFAULT_LIFETIME_S,
) -> JSONResponse:
    services: Services = request.app.state.services
    presented = bearer_token(request.headers) or ""
    if temporary_keys.is_temporary(presented) and presented not in services.settings.api_key_set():
        raise AccessDenied("a temporary API key cannot issue temporary API keys; use a permanent key")
    expires_at = math.ceil(time.time()) + expire_in_seconds
    keyed = bool(services.settings.api_key_set())
    token = temporary_keys.issue(services.settings.token_secret, identity, keyed=keyed, expires_at=expires_at)
    return JSONResponse({"token": token, "expires_at": expires_at})
