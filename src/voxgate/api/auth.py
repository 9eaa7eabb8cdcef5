"""API keys (permanent and temporary) and per-key rate limits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request

from voxgate.api import temporary_keys
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


ANONYMOUS = "anonymous"


def check_key(settings: Settings, headers: Mapping[str, str]) -> str:
    """The caller's identity (its API key), or :class:`InvalidApiKey`.

    The single check of every HTTP route and WebSocket. A temporary key (``st-…``) stands for the key that
    issued it until it expires. With no keys configured any other non-empty key is accepted as is.
    """
    token = bearer_token(headers)
    keys = settings.api_key_set()
    if token is None:
        if not keys:
            return ANONYMOUS
        raise InvalidApiKey("missing API key: send 'Authorization: Bearer <key>'")
    if temporary_keys.is_temporary(token) and token not in keys:
        return temporary_keys.verify(settings.token_secret, token, keys)
    if keys and token not in keys:
        raise InvalidApiKey("Invalid API-key provided.")
    return token


def rate_key(settings: Settings, identity: str) -> str:
    """The rate-limit bucket owner: the key, or one shared owner when keys are off (any string is accepted)."""
    return identity if settings.api_key_set() else ANONYMOUS


class RateLimiter:
    """Token buckets per (key, bucket name). ``rate`` requests per second, burst of ``max(1, rate)``.

    At most ``max_buckets`` are kept; the least recently used is dropped first (a bucket unused for
    ``burst / rate`` seconds is full again, so dropping it changes nothing).
    """

    def __init__(self, max_buckets: int = 10_000) -> None:
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._max_buckets = max_buckets
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def hit(self, key: str, bucket: str, rate: float) -> None:
        if rate <= 0:
            return
        burst = max(1.0, rate)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop((key, bucket), (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            allowed = tokens >= 1.0
            self._buckets[(key, bucket)] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self._max_buckets:
                self._buckets.popitem(last=False)
        if not allowed:
            raise over_limit(rate, bucket)


def over_limit(rate: float, bucket: str) -> Throttling:
    """The error of a call over its rate limit."""
    return Throttling(f"Requests rate limit exceeded ({rate:g}/s for {bucket}), please try again later.")


def require_key(bucket: str | None = None) -> Callable[[Request], Coroutine[Any, Any, str]]:
    """FastAPI dependency: authenticate, then count the call against ``bucket`` (``submit``/``query``)."""

    async def dependency(request: Request) -> str:
        services = request.app.state.services
        key = check_key(services.settings, request.headers)
        if bucket is not None:
            rate = getattr(services.settings, f"{bucket}_rps", 0.0)
            limiter = services.rate_limiter
            if isinstance(limiter, RateLimiter):  # in memory: no waiting
                limiter.hit(rate_key(services.settings, key), bucket, rate)
            else:  # shared (Redis): a network round trip, off the event loop
                await asyncio.to_thread(limiter.hit, rate_key(services.settings, key), bucket, rate)
        return key

    return dependency
