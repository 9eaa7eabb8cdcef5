"""One settings object for the whole service (environment prefix ``VOXGATE_``, nested with ``__``)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache() -> Path:
    return Path.home() / ".cache" / "voxgate"


class Settings(BaseSettings):
    """Service configuration. Every field can be set as ``VOXGATE_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="VOXGATE_", env_nested_delimiter="__", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8000, description="Port to bind.")
    public_url: str | None = Field(
        None, description="Base URL clients reach the server at (for result and upload URLs)."
    )
    api_keys: str = Field(
        "", description="Comma-separated accepted API keys; empty = accept any key, loopback bind only."
    )
    model_dir: Path = Field(default_factory=lambda: _default_cache() / "models", description="Model cache.")
    data_dir: Path = Field(default_factory=lambda: _default_cache() / "data", description="Results, uploads.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in data_dir.")

    model_profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-model-name engine profile overrides as JSON, e.g. "
        '{"fun-asr": {"beam_size": 5}, "my-asr": {"mode": "file", "family": "fun-asr"}}.',
    )
    default_model: str = Field("whisper-base", description="Engine model for multilingual profiles.")
    english_model: str = Field("whisper-tiny.en", description="Engine model for English-only work.")
    cpu_threads: int = Field(0, description="CTranslate2 threads per model call (0 = cores / decode_workers).")
    decode_workers: int = Field(
        0, description="Decode units run at once by the scheduler (0 = one per core, one thread each)."
    )

    job_workers: int = Field(1, description="File jobs processed at once.")
    job_queue_limit: int = Field(200, description="Queued file jobs beyond which submissions are refused.")
    job_max_attempts: int = Field(
        3,
        ge=1,
        description="Times the process may die while recognizing one file before it fails (stops do not count).",
    )
    job_backend: Literal["inprocess", "celery"] = Field(
        "inprocess",
        description="Who runs file jobs: this process's worker threads (inprocess), or `voxgate worker` processes "
        "fed through a Celery broker (celery: API nodes only validate, store and enqueue).",
    )
    broker_url: str | None = Field(None, description="Celery broker for the celery job backend (redis://host:6379/0).")
    broker_visibility_timeout_s: float = Field(
        3600.0,
        description="A job step not acknowledged this long after a worker took it (the worker died) is handed to "
        "another worker.",
    )
    result_retention_hours: float = Field(24.0, description="How long transcription results are served.")
    max_file_bytes: int = Field(2 * 1024**3, description="Largest file accepted (bytes).")
    max_file_duration_s: float = Field(12 * 3600, description="Longest file accepted (seconds).")
    sync_max_duration_s: float = Field(300, description="Longest audio for synchronous calls (seconds).")
    sync_max_bytes: int = Field(
        25 * 1024**2, description="Largest audio file for synchronous calls (multipart uploads, URLs)."
    )
    max_request_bytes: int = Field(16 * 1024**2, description="Largest JSON request body (bytes).")

    fetch_allow_private: bool = Field(False, description="Allow fetching private/loopback URLs.")
    fetch_allow_file: bool = Field(False, description="Allow file:// URLs.")
    fetch_timeout_s: float = Field(30.0, description="Connect/read timeout for URL fetches.")
    fetch_total_timeout_s: float = Field(3600.0, description="Longest time one file download may take.")

    submit_rps: float = Field(10.0, description="Job submissions per second per key.")
    query_rps: float = Field(20.0, description="Task queries per second per key.")

    realtime_max_sessions: int = Field(
        0, description="Hard limit on concurrent real-time sessions (0 = admit by measured headroom only)."
    )
    realtime_capacity: float = Field(
        0.0,
        description="Core-seconds per second that admitted real-time streams may use (0 = 0.85 x decode cores).",
    )
    realtime_idle_timeout_s: float = Field(60.0, description="Idle WebSocket connections closed after this.")
    realtime_fast_finals: bool = Field(
        True,
        description="Decode real-time finals on a short encoder window (guarded; falls back to the full window).",
    )

    token_secret: str = Field(
        default_factory=lambda: secrets.token_hex(32),
        description="Secret signing temporary keys (st- tokens); default: a random one kept in the job database, "
        "shared by every node on it (tokens hold across nodes and restarts).",
    )
    redis_url: str | None = Field(
        None,
        description="Redis holding the per-key rate limits of every API node (redis://host:6379/1); default: "
        "broker_url when it is a Redis URL; neither: each node limits on its own, in memory.",
    )
    metrics_public: bool = Field(False, description="Serve GET /metrics without an API key.")
    log_format: Literal["text", "json"] = Field("text", description="Log lines as text or one JSON object each.")

    def api_key_set(self) -> set[str]:
        return {k.strip() for k in self.api_keys.split(",") if k.strip()}

    def rate_limit_redis_url(self) -> str | None:
        """Where the rate limits are shared: ``redis_url``, else a Redis ``broker_url``, else nowhere (None)."""
        if self.redis_url:
            return self.redis_url
        broker = self.broker_url
        return broker if broker and broker.startswith(("redis://", "rediss://", "unix://")) else None

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'voxgate.db'}"

    def describe(self) -> dict[str, object]:
        """Settings as printed at start-up, secrets masked."""
        values = self.model_dump()
        if values.get("api_keys"):
            values["api_keys"] = f"<{len(self.api_key_set())} keys>"
        values["token_secret"] = "<hidden>"
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
