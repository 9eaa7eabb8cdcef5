from __future__ import annotations

import pytest

from voxgate.engine.catalog import Catalog
from voxgate.errors import ModelNotFound

SEED_NAMES = [
    "fun-asr",
    "fun-asr-2025-11-07",
    "fun-asr-mtl",
    "fun-asr-flash-2026-06-15",
    "fun-asr-realtime",
    "fun-asr-realtime-2025-11-07",
    "paraformer-realtime-v2",
    "paraformer-realtime-8k-v2",
    "qwen3-asr-flash",
    "qwen3-asr-flash-realtime",
    "qwen3-asr-flash-realtime-2025-10-27",
    "qwen3-asr-flash-filetrans",
    "qwen3-omni-flash",
    "qwen3-omni-flash-realtime",
    "qwen-audio-3.1-asr-flash-streaming",
    "qwen-audio-3.1-asr-flash",
    "qwen-audio-3.1-asr-flash-filetrans",
    "paraformer-v2",
]


@pytest.mark.parametrize("name", SEED_NAMES)
def test_every_documented_model_name_resolves(name: str) -> None:
    profile = Catalog().resolve(name)
    assert profile.name == name
    assert profile.model in ("whisper-base", "whisper-tiny.en")


def test_snapshot_inherits_base_profile() -> None:
    catalog = Catalog()
    assert catalog.resolve("fun-asr-realtime-2026-02-28").mode == "realtime"
    assert catalog.resolve("fun-asr-realtime-2026-02-28").sample_rates == (16000,)
    assert catalog.resolve("paraformer-realtime-8k-v2").sample_rates == (8000,)


def test_unknown_model_is_model_not_exist() -> None:
    with pytest.raises(ModelNotFound) as info:
        Catalog().resolve("whisper-large-v9")
    assert info.value.code == "Model.NotExist"
    assert "whisper-large-v9" in info.value.message


def test_mode_mismatch_is_rejected_but_sync_models_serve_files() -> None:
    catalog = Catalog()
    with pytest.raises(ModelNotFound):
        catalog.resolve("fun-asr-realtime", mode="file")
    assert catalog.resolve("qwen3-asr-flash", mode="file").family == "qwen-asr"


def test_overrides_change_a_profile() -> None:
    catalog = Catalog({"fun-asr": {"beam_size": 5}, "my-asr": {"mode": "file"}})
    assert catalog.resolve("fun-asr").beam_size == 5
    assert catalog.resolve("my-asr").mode == "file"
    assert "fun-asr-2025-11-07" in catalog.names()


def test_profiles_are_configurable_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from voxgate.config import Settings

    monkeypatch.setenv("VOXGATE_MODEL_PROFILES", '{"fun-asr": {"beam_size": 5, "sample_rates": [16000]}}')
    catalog = Catalog(Settings().model_profiles)
    assert catalog.resolve("fun-asr").beam_size == 5
    assert catalog.resolve("fun-asr").sample_rates == (16000,)
    assert catalog.resolve("fun-asr-2025-11-07").beam_size == 5
    with pytest.raises(ValueError, match="unknown field"):
        Catalog({"fun-asr": {"features": ["timestamps"]}})


@pytest.mark.parametrize(
    ("override", "words"),
    [({"beam": 5}, "unknown field"), ({"beam_size": 0}, "beam_size"), ({"model": "whisper-huge"}, "model must")],
)
def test_bad_profile_overrides_are_clear_errors(override: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Catalog({"fun-asr": override})
