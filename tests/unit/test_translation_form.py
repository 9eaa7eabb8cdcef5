"""Translation form checks that need no decoding (app without its lifespan: no model is loaded)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from voxgate.app import create_app
from voxgate.config import Settings


def test_english_only_engine_model_cannot_translate(tmp_path: Path) -> None:
    settings = Settings(
        api_keys="sk-t", data_dir=tmp_path, model_profiles={"qwen3-asr-flash": {"model": "whisper-tiny.en"}}
    )
    client = TestClient(create_app(settings))
    response = client.post(
        "/v1/audio/translations",
        headers={"Authorization": "Bearer sk-t"},
        data={"model": "whisper-1"},
        files={"file": ("a.wav", b"RIFF0000WAVE")},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "model" and "English-only" in error["message"]
