"""`voxgate transcribe` and `voxgate models` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import MODEL_DIR, audio_file, wer

ENV = {**os.environ, "VOXGATE_MODEL_DIR": str(MODEL_DIR)}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voxgate.cli", *args], capture_output=True, text=True, env=ENV, timeout=300
    )


def test_transcribe_writes_one_file_per_input_in_each_format(tmp_path: Path) -> None:
    inputs = [audio_file("goforward.wav"), audio_file("something.wav")]
    for fmt in ("json", "srt", "vtt", "txt"):
        result = run_cli(
            "transcribe",
            *map(str, inputs),
            "--format",
            fmt,
            "--output",
            str(tmp_path / fmt),
            "--language",
            "en",
        )
        assert result.returncode == 0, result.stderr
        assert "x real time" in result.stderr
        assert sorted(p.name for p in (tmp_path / fmt).iterdir()) == [f"goforward.{fmt}", f"something.{fmt}"]
    doc = json.loads((tmp_path / "json" / "goforward.json").read_text())
    sentence = doc["transcripts"][0]["sentences"][0]
    assert sentence["sentence_id"] == 1
    assert doc["properties"]["original_sampling_rate"] == 16000
    assert wer("go forward ten meters", doc["transcripts"][0]["text"]) <= 0.25
    srt = (tmp_path / "srt" / "something.srt").read_text()
    assert srt.startswith("1\n00:00:00,") and " --> " in srt
    assert (tmp_path / "vtt" / "something.vtt").read_text().startswith("WEBVTT")
    assert wer("go somewhere and do something", (tmp_path / "txt" / "something.txt").read_text()) <= 0.25


def test_transcribe_to_stdout_and_clear_errors(tmp_path: Path) -> None:
    result = run_cli("transcribe", str(audio_file("goforward.wav")))
    assert result.returncode == 0
    assert wer("go forward ten meters", result.stdout) <= 0.25
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    failed = run_cli("transcribe", str(bad))
    assert failed.returncode == 1
    assert "bad.wav" in failed.stderr and "Traceback" not in failed.stderr
    unknown = run_cli("transcribe", str(audio_file("goforward.wav")), "--model", "nope-asr")
    assert unknown.returncode == 2 and "nope-asr" in unknown.stderr


def test_models_lists_bundled_models() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voxgate.cli", "models"],
        capture_output=True,
        text=True,
        env={**ENV, "COLUMNS": "200"},
        timeout=60,
    )
    assert result.returncode == 0
    assert "whisper-base" in result.stdout and "whisper-tiny.en" in result.stdout
    assert "ready" in result.stdout
