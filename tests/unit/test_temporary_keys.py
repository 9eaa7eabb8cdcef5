"""Temporary keys (signing, expiry, binding to the issuing key) and the bounded rate limiter."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from voxgate.api import temporary_keys
from voxgate.api.auth import RateLimiter, check_key, rate_key, require_key
from voxgate.api.errors import install_error_handlers
from voxgate.config import Settings
from voxgate.errors import InvalidApiKey, Throttling

SECRET = "s3cret"


def _token(identity: str, *, keyed: bool = True, lifetime: int = 60, secret: str = SECRET) -> str:
    return temporary_keys.issue(secret, identity, keyed=keyed, expires_at=int(time.time()) + lifetime)


def test_token_stands_for_the_key_that_issued_it() -> None:
    keys = {"sk-a", "sk-b", "sk-c"}
    token = _token("sk-b")
    assert token.startswith("st-") and "sk-b" not in token
    assert temporary_keys.verify(SECRET, token, keys) == "sk-b"


@pytest.mark.parametrize(
    ("case", "words"),
    [("expired", "expired"), ("key-removed", "no longer"), ("other-secret", "invalid"), ("tampered", "invalid")],
)
def test_bad_tokens_are_invalid_api_keys(case: str, words: str) -> None:
    keys = {"sk-a", "sk-b"}
    token = _token(
        "sk-a", lifetime=-1 if case == "expired" else 60, secret="other" if case == "other-secret" else SECRET
    )
    if case == "tampered":
        payload, _, signature = token.partition(".")
        token = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
    if case == "key-removed":
        keys = {"sk-b"}
    with pytest.raises(InvalidApiKey, match=f"(?i){words}"):
        temporary_keys.verify(SECRET, token, keys)


def test_expiry_is_exact_to_the_second() -> None:
    token = temporary_keys.issue(SECRET, "sk-a", keyed=True, expires_at=1000)
    assert temporary_keys.verify(SECRET, token, {"sk-a"}, now=999.5) == "sk-a"
    with pytest.raises(InvalidApiKey):
        temporary_keys.verify(SECRET, token, {"sk-a"}, now=1000.0)


def test_check_key_accepts_tokens_without_keys_configured_too() -> None:
    open_server = Settings(api_keys="", token_secret=SECRET)
    token = _token("my-client", keyed=False)
    assert check_key(open_server, {"authorization": f"Bearer {token}"}) == "my-client"
    with pytest.raises(InvalidApiKey):  # an expired token is refused even where any other string is accepted
        check_key(open_server, {"authorization": f"Bearer {_token('my-client', keyed=False, lifetime=-5)}"})
    keyed_server = Settings(api_keys="sk-a", token_secret=SECRET)
    assert check_key(keyed_server, {"authorization": f"Bearer {_token('sk-a')}"}) == "sk-a"
    with pytest.raises(InvalidApiKey):  # a subject-only token does not open a server with keys
        check_key(keyed_server, {"authorization": f"Bearer {_token('sk-a', keyed=False)}"})


def test_rate_limiter_keeps_a_bounded_number_of_buckets() -> None:
    limiter = RateLimiter(max_buckets=3)
    for n in range(50):
        limiter.hit(f"key-{n}", "submit", 1.0)
    assert len(limiter) == 3
    limiter.hit("busy", "submit", 1.0)
    with pytest.raises(Throttling):
        limiter.hit("busy", "submit", 1.0)


def test_without_keys_arbitrary_bearer_strings_share_one_bucket() -> None:
    settings = Settings(api_keys="", submit_rps=1.0)
    assert rate_key(settings, "random-1") == rate_key(settings, "random-2")
    limiter = RateLimiter()
    app = FastAPI()
    app.state.services = SimpleNamespace(settings=settings, rate_limiter=limiter)
    install_error_handlers(app)

    @app.post("/submit", dependencies=[Depends(require_key("submit"))])
    async def submit() -> dict[str, bool]:
        return {"ok": True}

    client = TestClient(app)
    assert client.post("/submit", headers={"Authorization": "Bearer random-1"}).status_code == 200
    refused = client.post("/submit", headers={"Authorization": "Bearer random-2"})
    assert refused.status_code == 429 and refused.json()["code"] == "Throttling"
    for n in range(20):
        client.post("/submit", headers={"Authorization": f"Bearer random-{n}"})
    assert len(limiter) == 1
