"""Per-key rate limits shared by every API node: one token bucket per (key, bucket name) in Redis.

The bucket is refilled and spent by one Lua script, atomically on the Redis server and timed by the server's
clock (the nodes' clocks do not matter). It behaves like :class:`voxgate.api.auth.RateLimiter`: ``rate``
requests per second, a burst of ``max(1, rate)``. Keys are stored as owner tags, never as themselves, and expire
once their bucket is full again. When Redis cannot be reached each node limits on its own, in memory, and tries
Redis again a few seconds later: a limit per node rather than none, and no request fails because of Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit

import redis

from voxgate.api.auth import RateLimiter, over_limit
from voxgate.jobs.store import owner_of
from voxgate.services import RequestLimiter

log = logging.getLogger("voxgate.ratelimit")

KEY_PREFIX = "voxgate:rate"

# KEYS[1]: the bucket; ARGV: rate (per second), burst. Returns 1 when the call is allowed, else 0.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return allowed
"""


def redacted(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class RedisRateLimiter:
    """The :class:`~voxgate.services.RequestLimiter` of a node among several: the buckets live in Redis.

    Blocking (one round trip to Redis): call :meth:`hit` from a worker thread when on the event loop.
    """

    def __init__(
        self, url: str, *, timeout_s: float = 0.5, retry_after_s: float = 5.0, fallback: RequestLimiter | None = None
    ) -> None:
        self.url = url
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._script = self._client.register_script(_TOKEN_BUCKET)
        self._fallback = fallback or RateLimiter()
        self._retry_after_s = retry_after_s
        self._down_until = 0.0
        self._lock = threading.Lock()

    def hit(self, key: str, bucket: str, rate: float) -> None:
        if rate <= 0:
            return
        if time.monotonic() >= self._down_until:
            try:
                allowed = self._script(keys=[f"{KEY_PREFIX}:{bucket}:{owner_of(key)}"], args=[rate, max(1.0, rate)])
            except redis.RedisError as exc:
                self._redis_down(exc)
            else:
                if not allowed:
                    raise over_limit(rate, bucket)
                return
        self._fallback.hit(key, bucket, rate)

    def _redis_down(self, exc: Exception) -> None:
        with self._lock:
            first = time.monotonic() >= self._down_until
            self._down_until = time.monotonic() + self._retry_after_s
        if first:
            log.warning(
                "rate limits: Redis at %s unreachable (%s); limiting on this node alone, retrying in %g s",
                redacted(self.url),
                exc,
                self._retry_after_s,
            )

    def close(self) -> None:
        self._client.close()


def rate_limiter_for(url: str | None) -> RequestLimiter:
    """Buckets shared through Redis at ``url``, or this process's own (in memory) without one."""
    if not url:
        return RateLimiter()
    log.info("rate limits shared through Redis at %s", redacted(url))
    return RedisRateLimiter(url)
