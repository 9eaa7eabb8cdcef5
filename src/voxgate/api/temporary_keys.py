"""Temporary API keys: short-lived ``st-`` tokens that stand in for the key that issued them.

A token is ``st-<payload>.<signature>``: the payload (base64url JSON) holds the expiry and who issued it,
the signature is an HMAC-SHA256 of the payload under ``Settings.token_secret``. Nothing is stored: any
server holding the same secret accepts the token until it expires. Unless configured, the secret is a random
one kept in the job database (:data:`SIGNING_SECRET`), so every node on that database, and a restarted one,
accepts the tokens of the others.

With API keys configured the payload names the issuing key only by a keyed digest (the key itself never
leaves the server) and the token is accepted only while that key is still configured. Without keys (loopback
servers, where any bearer string is accepted) the payload carries the caller's identity string as is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from voxgate.errors import InvalidApiKey

TOKEN_PREFIX = "st-"
SIGNING_SECRET = "temporary-keys"  # name of the signing secret in the job store's shared secrets
MIN_LIFETIME_S = 1
MAX_LIFETIME_S = 1800
DEFAULT_LIFETIME_S = 60
_SIGNATURE_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def key_digest(secret: str, key: str) -> str:
    """A short keyed digest naming an API key inside tokens."""
    return _b64(_mac(secret, b"key:" + key.encode())[:12])


def issue(secret: str, identity: str, *, keyed: bool, expires_at: int) -> str:
    """A token for ``identity`` (a configured key when ``keyed``) valid until ``expires_at`` (Unix seconds)."""
    claims: dict[str, object] = {"exp": expires_at}
    if keyed:
        claims["kid"] = key_digest(secret, identity)
    else:
        claims["sub"] = identity
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{TOKEN_PREFIX}{payload}.{_b64(_mac(secret, payload.encode())[:_SIGNATURE_BYTES])}"


def is_temporary(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)


def verify(secret: str, token: str, keys: set[str], now: float | None = None) -> str:
    """The identity a valid, unexpired token stands for; otherwise :class:`InvalidApiKey`."""
    payload, _, signature = token[len(TOKEN_PREFIX) :].partition(".")
    try:
        expected = _mac(secret, payload.encode())[:_SIGNATURE_BYTES]
        if not hmac.compare_digest(_unb64(signature), expected):
            raise InvalidApiKey("Invalid API-key provided.")
        claims = json.loads(_unb64(payload))
        expires_at = int(claims["exp"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidApiKey("Invalid API-key provided.") from exc
    if (now if now is not None else time.time()) >= expires_at:
        raise InvalidApiKey("the temporary API key has expired")
    if "kid" in claims:
        for key in keys:
            if hmac.compare_digest(key_digest(secret, key), str(claims["kid"])):
                return key
        raise InvalidApiKey("the key that issued this temporary API key is no longer accepted")
    subject = claims.get("sub")
    if keys or not isinstance(subject, str) or not subject:
        raise InvalidApiKey("Invalid API-key provided.")
    return subject
