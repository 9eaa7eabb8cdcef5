"""API keys and per-key rate limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request

from voxgate.config import Settings
from voxgate.errors import InvalidApiKey, Throttling


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <key>`` header (scheme case-insensitive)."""
    value = headers.get("authorization") or headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_key(settings: Settings, headers: Mapping[str, str]) -> str:
    """The caller's key, or :class:`InvalidApiKey`. With no keys configured any non-empty key is accepted."""
    token = bearer_token(headers)
    keys = settings.api_key_set()
    if token is None:
        if not keys:
            return "anonymous"
        raise InvalidApiKey("missing API key: send 'Authorization: Bearer <key>'")
    if keys and token not in keys:
        raise InvalidApiKey("Invalid API-key provided.")
    return token


class RateLimiter:
    """Token buckets per (key, bucket name). ``rate`` requests per second, burst of ``max(1, rate)``."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, bucket: str, rate: float) -> None:
        if rate <= 0:
            return
        burst = max(1.0, rate)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get((key, bucket), (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[(key, bucket)] = (tokens, now)
                raise Throttling(f"Requests rate limit exceeded ({rate:g}/s for {bucket}), please try again later.")
            self._buckets[(key, bucket)] = (tokens - 1.0, now)


def require_key(bucket: str | None = None) -> Callable[[Request], Coroutine[Any, Any, str]]:
    """FastAPI dependency: authenticate, then count the call against ``bucket`` (``submit``/``query``)."""

    async def dependency(request: Request) -> str:
        services = request.app.state.services
        key = check_key(services.settings, request.headers)
        if bucket is not None:
            rate = getattr(services.settings, f"{bucket}_rps", 0.0)
            services.rate_limiter.hit(key, bucket, rate)
        return key

    return dependency
