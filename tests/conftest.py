"""Shared fixtures: test audio, a shared model cache, and a real server on a loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
AUDIO = Path(os.environ.get("VOXGATE_TEST_AUDIO", ROOT / "tests" / "data"))
MODEL_DIR = Path(os.environ.get("VOXGATE_MODEL_DIR", Path.home() / ".cache" / "voxgate" / "models"))
API_KEY = "sk-test-key"

# Reference transcripts of the real recordings in tests/data (tests/data/README.md).
REFERENCES = {
    "two_cities_16k.wav": (
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it "
        "was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything "
        "before us, we had nothing before us, we were all going direct to Heaven, we were all going direct the "
        "other way, in short, the period was so far like the present period, that some of its noisiest "
        "authorities insisted on its being received, for good or for evil, in the superlative degree of "
        "comparison only."
    ),
    "beckett_16k.wav": "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.",
    "goforward.wav": "go forward ten meters",
    "something.wav": "go somewhere and do something",
}


def audio_file(name: str) -> Path:
    """A test recording from tests/data."""
    path = AUDIO / name
    if not path.exists():
        raise FileNotFoundError(path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    """A voxgate server process on 127.0.0.1."""

    url: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    data_dir: Path,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
    program: list[str] | None = None,
) -> RunningServer:
    """Start ``voxgate serve`` in a subprocess and wait for /health (``program``: the Python arguments that run
    the CLI, ``-m voxgate.cli`` unless a test wraps it)."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "VOXGATE_MODEL_DIR": str(MODEL_DIR),
            "VOXGATE_DATA_DIR": str(data_dir),
            "VOXGATE_API_KEYS": API_KEY,
            "VOXGATE_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "VOXGATE_FETCH_ALLOW_FILE": "1",
        }
    )
    env.update(extra_env or {})
    log_path = data_dir / f"server-{port}.log"
    handle = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, *(program or ["-m", "voxgate.cli"]), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return RunningServer(url, port, data_dir, process, log_path, env)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"server did not become healthy:\n{log_path.read_text(errors='replace')}")


def stop_server(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server for the whole test session (models load once)."""
    running = start_server(tmp_path_factory.mktemp("server"))
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise RuntimeError("espeak-ng is required (make install installs it)")
    return path


def synth(text: str, out: Path, voice: str = "en-us", speed: int = 150) -> Path:
    """Speech from espeak-ng, resampled to 16 kHz mono 16-bit WAV."""
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-i",
            str(raw),
            "-ar",
            "16000",
            "-ac",
            "1",
            "-sample_fmt",
            "s16",
            str(out),
        ],
        check=True,
    )
    raw.unlink()
    return out


@pytest.fixture(scope="session")
def recognizer() -> object:
    """The real engine with the bundled models (loaded once per test session)."""
    from voxgate.engine.recognizer import EngineConfig, Recognizer

    return Recognizer(EngineConfig(model_dir=MODEL_DIR))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after lower-casing, dropping punctuation and spelling out digits 0-20."""
    import jiwer

    return float(jiwer.wer(normalize_text(reference), normalize_text(hypothesis)))


_NUMBERS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]


def normalize_text(text: str) -> str:
    import re

    words = re.sub(r"[^\w\s']", " ", text.lower()).split()
    return " ".join(_NUMBERS[int(w)] if w.isdigit() and int(w) <= 20 else w for w in words) or "<empty>"


def join_wavs(parts: list[Path], out: Path, pause_s: float = 0.0) -> Path:
    """Concatenate 16 kHz mono 16-bit WAV files, with ``pause_s`` of silence after each."""
    import wave

    silence = bytes(int(pause_s * 16000) * 2)
    with wave.open(str(out), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        for part in parts:
            with wave.open(str(part), "rb") as reader:
                if (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) != (1, 2, 16000):
                    raise ValueError(f"{part} is not 16 kHz mono 16-bit")
                writer.writeframes(reader.readframes(reader.getnframes()) + silence)
    return out
