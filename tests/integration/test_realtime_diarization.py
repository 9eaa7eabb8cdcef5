"""Live speaker labels on the run-task WebSocket: stable ids as sentences finalize."""

from __future__ import annotations

import uuid
import wave
from pathlib import Path

from tests.conftest import RunningServer, audio_file, synth
from tests.integration.test_realtime_runtask import connect, finals, run_task


def _pcm(path: Path) -> bytes:
    with wave.open(str(path), "rb") as handle:
        return handle.readframes(handle.getnframes())


def test_live_speaker_labels_are_stable(server: RunningServer, tmp_path: Path) -> None:
    pause = bytes(2 * 16000 * 2)  # 2 s of silence ends each sentence
    real = _pcm(audio_file("goforward.wav"))
    female = _pcm(synth("Please close the window before you leave the office.", tmp_path / "f.wav", voice="en+f4"))
    male_again = _pcm(audio_file("goforward.wav"))
    ws = connect(server)
    try:
        events = run_task(
            ws, uuid.uuid4().hex, real + pause + female + pause + male_again + pause, diarization_enabled=True
        )
        plain = run_task(ws, uuid.uuid4().hex, real + pause)
    finally:
        ws.close()
    sentences = finals(events)
    assert len(sentences) == 3, [s["text"] for s in sentences]
    ids = [s["speaker_id"] for s in sentences]
    assert ids[0] == ids[2] != ids[1], ids
    assert "window" in sentences[1]["text"].lower()
    assert all("speaker_id" not in s for s in finals(plain))
