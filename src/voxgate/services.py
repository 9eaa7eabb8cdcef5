"""The per-process service container: settings, catalog, recognizer and the shared stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from voxgate.config import Settings
from voxgate.engine.catalog import Catalog
from voxgate.engine.recognizer import Recognizer
from voxgate.engine.types import Hotword
from voxgate.errors import InvalidParameter, ModelUnavailable
from voxgate.sync_gate import SYNC_QUEUE_LIMIT, SyncGate

if TYPE_CHECKING:
    from voxgate.jobs.store import JobStore
    from voxgate.uploads import UploadSigner


class VocabularyLookup(Protocol):
    """Resolves a ``vocabulary_id`` to its hotwords (None if there is no such vocabulary, or with ``owner``
    if it belongs to someone else)."""

    def hotwords(self, vocabulary_id: str, owner: str | None = None) -> list[Hotword] | None: ...


class JobQueue(Protocol):
    """Takes stored file tasks: the in-process executor, or the celery backend's publisher."""

    def check_capacity(self) -> None: ...

    def submitted(self, task_id: str) -> None: ...

    def stop(self) -> None: ...


class RequestLimiter(Protocol):
    """Counts a call of ``key`` against ``bucket`` at ``rate`` per second; raises ``Throttling`` when over."""

    def hit(self, key: str, bucket: str, rate: float) -> None: ...


@dataclass
class Services:
    """Everything a request handler may use. Built and closed by the app's lifespan (``voxgate.app``);
    routers only read these fields."""

    settings: Settings
    catalog: Catalog
    recognizer: Recognizer
    rate_limiter: RequestLimiter
    store: JobStore | None = None
    executor: JobQueue | None = None
    upload_signer: UploadSigner | None = None
    vocabularies: VocabularyLookup | None = None
    sync_gate: SyncGate = field(default_factory=lambda: SyncGate(1, SYNC_QUEUE_LIMIT))

    def jobs(self) -> JobStore:
        """The job store (an error before the lifespan opened it)."""
        if self.store is None:
            raise ModelUnavailable("the job store is not running")
        return self.store

    def job_executor(self) -> JobQueue:
        if self.executor is None:
            raise ModelUnavailable("the job executor is not running")
        return self.executor

    def signer(self) -> UploadSigner:
        if self.upload_signer is None:
            raise ModelUnavailable("uploads are not available yet")
        return self.upload_signer

    def hotwords_for(self, vocabulary_id: str | None, owner: str | None = None) -> list[Hotword]:
        """Hotwords of a vocabulary; an unknown id (or, with ``owner``, another key's vocabulary) is an
        ``InvalidParameter`` naming ``vocabulary_id``. Blocking: call from a worker thread."""
        if not vocabulary_id:
            return []
        found = self.vocabularies.hotwords(vocabulary_id, owner) if self.vocabularies else None
        if found is None:
            raise InvalidParameter(f"vocabulary_id '{vocabulary_id}' does not exist", param="vocabulary_id")
        return found
