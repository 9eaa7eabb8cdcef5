"""State API nodes share: rate limits in a real redis-server, secrets and vocabularies in one job database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.cluster import redis_server
from tests.conftest import free_port
from voxgate.api import temporary_keys
from voxgate.api.shared_limits import RedisRateLimiter
from voxgate.config import Settings
from voxgate.engine.types import Hotword
from voxgate.errors import InvalidApiKey, Throttling
from voxgate.jobs.store import JobStore
from voxgate.uploads import UploadSigner


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


def test_one_keys_bucket_holds_across_nodes(redis_url: str) -> None:
    node_a, node_b = RedisRateLimiter(redis_url), RedisRateLimiter(redis_url)
    node_a.hit("sk-shared", "submit", 2.0)
    node_b.hit("sk-shared", "submit", 2.0)  # burst of 2 spent, one call on each node
    with pytest.raises(Throttling, match="2/s for submit"):
        node_a.hit("sk-shared", "submit", 2.0)
    with pytest.raises(Throttling):
        node_b.hit("sk-shared", "submit", 2.0)
    node_b.hit("sk-shared", "query", 2.0)  # another bucket of the same key
    node_b.hit("sk-other", "submit", 2.0)  # another key
    time.sleep(0.6)  # 2/s: one token back
    node_b.hit("sk-shared", "submit", 2.0)

    keys = [k.decode() for k in redis.Redis.from_url(redis_url).keys("voxgate:rate:*")]
    assert keys and not any("sk-" in k for k in keys), keys  # owner tags, not the keys themselves
    ttl = redis.Redis.from_url(redis_url).pttl(keys[0])
    assert 0 < ttl <= 2000, ttl  # gone once the bucket would be full again


def test_concurrent_calls_on_two_nodes_spend_the_bucket_exactly_once(redis_url: str) -> None:
    nodes = [RedisRateLimiter(redis_url), RedisRateLimiter(redis_url)]
    allowed: list[int] = []
    start = threading.Barrier(40)

    def call(n: int) -> None:
        start.wait()
        try:
            nodes[n % 2].hit("sk-race", "submit", 5.0)
            allowed.append(n)
        except Throttling:
            pass

    began = time.monotonic()
    threads = [threading.Thread(target=call, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refilled = int((time.monotonic() - began) * 5.0)
    assert 5 <= len(allowed) <= 5 + refilled, (len(allowed), refilled)


def test_without_redis_each_node_limits_on_its_own() -> None:
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", retry_after_s=60)  # nothing listens there
    limiter.hit("sk-a", "submit", 1.0)  # no error although Redis is unreachable
    with pytest.raises(Throttling):
        limiter.hit("sk-a", "submit", 1.0)  # the in-memory fallback still limits


def test_nodes_on_one_database_share_secrets_and_vocabularies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    node_a, node_b = JobStore(url), JobStore(url)

    assert node_a.shared_secret("temporary-keys") == node_b.shared_secret("temporary-keys")
    assert node_a.shared_secret("temporary-keys") != node_b.shared_secret("upload-policy")
    token = temporary_keys.issue(
        node_a.shared_secret(temporary_keys.SIGNING_SECRET), "sk-a", keyed=True, expires_at=int(time.time()) + 60
    )
    assert temporary_keys.verify(node_b.shared_secret(temporary_keys.SIGNING_SECRET), token, {"sk-a"}) == "sk-a"
    with pytest.raises(InvalidApiKey):
        temporary_keys.verify(Settings().token_secret, token, {"sk-a"})  # a per-process random secret would fail
    policy = "eyJleHBpcmF0aW9uIjoiMjAzMC0wMS0wMVQwMDowMDowMC4wMDBaIn0="
    assert UploadSigner.from_store(node_b).verify(policy, UploadSigner.from_store(node_a).sign(policy))

    assert node_b.hotwords("vocab-x-1") is None  # asked on B before it exists
    node_a.create_vocabulary("vocab-x-1", owner="o", prefix="x", target_model="fun-asr", items=[{"text": "Zorvex"}])
    assert node_b.hotwords("vocab-x-1", "o") == [Hotword("Zorvex", 4, None)]
    assert node_a.update_vocabulary("vocab-x-1", owner="o", items=[{"text": "Quillon", "weight": 3}])
    assert node_b.hotwords("vocab-x-1", "o") == [Hotword("Quillon", 3, None)]
    assert node_b.hotwords("vocab-x-1", "someone else") is None
    assert node_a.delete_vocabulary("vocab-x-1", owner="o")
    assert node_b.hotwords("vocab-x-1", "o") is None


def test_rate_limits_use_redis_url_else_a_redis_broker() -> None:
    assert Settings().rate_limit_redis_url() is None
    assert Settings(broker_url="redis://q:6379/0").rate_limit_redis_url() == "redis://q:6379/0"
    assert Settings(broker_url="amqp://q//").rate_limit_redis_url() is None
    assert Settings(redis_url="redis://r/1", broker_url="redis://q/0").rate_limit_redis_url() == "redis://r/1"
