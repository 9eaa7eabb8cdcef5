"""Small compressed files that decode to many hours: refused while reading, with memory flat."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import API_KEY, RunningServer
from voxgate.audio.decode import iter_channel
from voxgate.errors import AudioError

AUTH = {"Authorization": f"Bearer {API_KEY}"}
HOURS = 13


@pytest.fixture(scope="module")
def silent_13h_mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """13 h of 8 kbit/s MP3 silence (47 MB): ten minutes encoded once, its frames repeated."""
    folder = tmp_path_factory.mktemp("long")
    piece = folder / "10min.mp3"
    source = ["-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "600"]
    codec = ["-c:a", "libmp3lame", "-b:a", "8k", "-write_xing", "0", "-id3v2_version", "0"]
    subprocess.run(["ffmpeg", "-v", "error", *source, *codec, str(piece)], check=True)
    frames = piece.read_bytes()
    out = folder / "13h.mp3"
    with out.open("wb") as handle:
        for _ in range(HOURS * 6):
            handle.write(frames)
    return out


class _Unseekable(io.RawIOBase):
    """A pipe-like reader: no size, no seeking, so no container duration to refuse by."""

    def __init__(self, path: Path) -> None:
        self._handle = path.open("rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        return self._handle.readinto(buffer)


def test_13_hours_of_compressed_silence_fail_as_a_file_job_without_decoding_it(
    server: RunningServer, silent_13h_mp3: Path
) -> None:
    process = psutil.Process(server.process.pid)
    before = process.memory_info().rss
    body = {"model": "fun-asr", "input": {"file_urls": [silent_13h_mp3.as_uri()]}}
    submitted = httpx.post(f"{server.url}/api/v1/services/audio/asr/transcription", json=body, headers=AUTH)
    assert submitted.status_code == 200, submitted.text
    task_id = submitted.json()["output"]["task_id"]
    deadline = time.monotonic() + 120
    while (output := httpx.get(f"{server.url}/api/v1/tasks/{task_id}", headers=AUTH).json()["output"])[
        "task_status"
    ] not in ("SUCCEEDED", "FAILED"):
        assert time.monotonic() < deadline, output
        time.sleep(0.2)
    assert output["task_status"] == "FAILED"
    item = output["results"][0]
    assert item["subtask_status"] == "FAILED"
    assert item["code"] == "InvalidFile.TooLong", item
    assert "12 h limit" in item["message"] and "13.0 h" in item["message"], item["message"]
    grown = (process.memory_info().rss - before) / 1024**2
    assert grown < 64, f"server memory grew {grown:.0f} MB refusing a 47 MB file"


def test_a_stream_without_a_declared_duration_is_cut_off_at_the_limit_while_reading(silent_13h_mp3: Path) -> None:
    """Nothing in the header to go by: samples are counted as they decode and the read stops at the limit,
    holding one chunk at a time."""
    process = psutil.Process()
    before = process.memory_info().rss
    decoded = 0.0
    peak = 0
    with pytest.raises(AudioError) as refused:
        for chunk in iter_channel(_Unseekable(silent_13h_mp3), max_duration_s=1200):  # type: ignore[arg-type]
            decoded += chunk.shape[0] / 16000
            peak = max(peak, process.memory_info().rss)
    assert refused.value.reason == "too_long"
    assert "1200 s limit" in str(refused.value)
    assert 1100 <= decoded <= 1200, decoded
    assert (peak - before) / 1024**2 < 64, "one 30 s chunk at a time, not the whole stream"
