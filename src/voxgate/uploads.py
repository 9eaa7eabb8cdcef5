"""Files uploaded to this server and named ``oss://<key>``: where they live, whose they are, how policies are signed.

A key is ``dashscope-instant/<owner>/<random>/<file name>``: the owner tag of the API key that asked for the
upload policy (:func:`voxgate.jobs.store.owner_of`), so another key cannot use the file. One function,
:func:`resolve_oss`, maps a reference to its local path for every caller (synchronous calls, file jobs).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from voxgate.config import Settings
from voxgate.errors import InvalidParameter, UploadMissing

if TYPE_CHECKING:
    from voxgate.jobs.store import JobStore

KEY_PREFIX = "dashscope-instant"
SIGNING_SECRET = "upload-policy"  # name of the policy signing key in the job store's shared secrets
MAX_KEY_CHARS = 1024


def uploads_root(settings: Settings) -> Path:
    return settings.data_dir / "uploads"


def upload_dir_for(owner: str) -> str:
    """A fresh upload folder (key prefix) belonging to ``owner``."""
    return f"{KEY_PREFIX}/{owner}/{uuid.uuid4().hex}"


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


def _keys(url: str) -> list[str]:
    key = url[len("oss://") :]
    return [key] if unquote(key) == key else [key, unquote(key)]


def owns(url: str, owner: str) -> bool:
    """Whether the ``oss://`` reference lies in an upload folder of ``owner``."""
    return any(key.startswith(f"{KEY_PREFIX}/{owner}/") for key in _keys(url))


def resolve_oss(settings: Settings, url: str, *, owner: str | None = None, param: str = "audio") -> Path:
    """The local file behind an ``oss://<key>`` URL returned by an upload to this server.

    With ``owner``, a file uploaded under another key is answered exactly like a missing one.
    """
    if not isinstance(url, str) or not url.startswith("oss://"):
        raise InvalidParameter("expected an oss:// URL", param=param)
    for candidate in _keys(url):
        try:
            path = key_path(settings, candidate)
        except InvalidParameter as exc:
            raise InvalidParameter(f"invalid oss:// URL: {exc.message}", param=param) from exc
        if path.is_file() and (owner is None or owns(url, owner)):
            return path
    hours = settings.result_retention_hours
    raise UploadMissing(
        f"the uploaded file {url} does not exist on this server (uploads are kept {hours:g} h)", param=param
    )


@dataclass(frozen=True)
class UploadSigner:
    """Signs upload policies with a key every process on the job database shares, so a policy handed out by one
    API node is accepted by any other (the uploaded file itself lands in the shared ``data_dir``)."""

    secret: bytes

    @classmethod
    def from_store(cls, store: JobStore) -> UploadSigner:
        """The signing key kept in ``store`` (created on first use; blocking: call from a worker thread)."""
        return cls(bytes.fromhex(store.shared_secret(SIGNING_SECRET)))

    def sign(self, policy: str) -> str:
        return base64.b64encode(hmac.new(self.secret, policy.encode(), hashlib.sha1).digest()).decode()

    def verify(self, policy: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(policy).encode(), signature.encode())  # bytes: any text compares


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
