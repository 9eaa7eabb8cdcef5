"""The per-process service container: settings, catalog, recognizer and the shared stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from voxgate.api.auth import RateLimiter
from voxgate.config import Settings
from voxgate.engine.catalog import Catalog
from voxgate.engine.recognizer import EngineConfig, Recognizer
from voxgate.engine.types import Hotword
from voxgate.errors import InvalidParameter


class VocabularyLookup(Protocol):
    """Resolves a ``vocabulary_id`` to its hotwords (None if there is no such vocabulary)."""

    def hotwords(self, vocabulary_id: str) -> list[Hotword] | None: ...


@dataclass
class Services:
    """Everything a request handler may use. Built once in the app's lifespan."""

    settings: Settings
    catalog: Catalog
    recognizer: Recognizer
    rate_limiter: RateLimiter = field(default_factory=RateLimiter)
    vocabularies: VocabularyLookup | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings) -> Services:
        engine = EngineConfig(
            model_dir=settings.model_dir,
            cpu_threads=settings.cpu_threads,
            num_workers=settings.decode_workers,
            batch_size=settings.batch_size,
        )
        return cls(settings=settings, catalog=Catalog(settings.model_profiles), recognizer=Recognizer(engine))

    def hotwords_for(self, vocabulary_id: str | None) -> list[Hotword]:
        """Hotwords of a vocabulary; an unknown id is an ``InvalidParameter`` naming ``vocabulary_id``."""
        if not vocabulary_id:
            return []
        found = self.vocabularies.hotwords(vocabulary_id) if self.vocabularies else None
        if found is None:
            raise InvalidParameter(f"vocabulary_id '{vocabulary_id}' does not exist", param="vocabulary_id")
        return found
