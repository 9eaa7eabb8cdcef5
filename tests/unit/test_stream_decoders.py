"""Incremental decoders for streamed audio: every declared format, byte-by-byte arrival, mismatches."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import audio_file
from voxgate.audio.incremental import make_decoder
from voxgate.errors import AudioError, InvalidParameter


def feed_all(fmt: str, data: bytes, rate: int = 16000, piece: int = 777) -> np.ndarray:
    decoder = make_decoder(fmt, rate)
    parts = [decoder.feed(data[i : i + piece]) for i in range(0, len(data), piece)]
    parts.append(decoder.flush())
    return np.concatenate(parts)


def encode(tmp_path: Path, suffix: str, *args: str) -> bytes:
    out = tmp_path / f"clip{suffix}"
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-i", str(audio_file("something.wav")), *args, str(out)], check=True
    )
    return out.read_bytes()


@pytest.mark.parametrize(
    ("fmt", "suffix", "args"),
    [
        ("mp3", ".mp3", ()),
        ("aac", ".aac", ("-f", "adts")),
        ("opus", ".opus", ("-c:a", "libopus")),
        ("speex", ".spx", ("-c:a", "libspeex", "-f", "ogg")),
        ("wav", ".wav", ("-ac", "2")),
    ],
)
def test_compressed_and_container_formats_decode_in_pieces(
    tmp_path: Path, fmt: str, suffix: str, args: tuple[str, ...]
) -> None:
    samples = feed_all(fmt, encode(tmp_path, suffix, *args))
    assert 2.8 < samples.shape[0] / 16000 < 3.3
    assert 0.2 < float(np.abs(samples).max()) <= 1.0


def test_pcm_at_8khz_is_resampled_and_a_wav_header_is_skipped() -> None:
    wav = audio_file("goforward.wav").read_bytes()
    as_pcm = feed_all("pcm", wav)
    as_wav = feed_all("wav", wav)
    assert abs(as_pcm.shape[0] - as_wav.shape[0]) <= 1
    pcm8 = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(audio_file("goforward.wav")), "-ar", "8000", "-f", "s16le", "-"],
        check=True,
        capture_output=True,
    ).stdout
    up = feed_all("pcm", pcm8, rate=8000, piece=333)
    assert abs(up.shape[0] - as_wav.shape[0]) < 400


@pytest.mark.parametrize(
    ("fmt", "source", "words"),
    [
        ("wav", "mp3", "riff/wave header"),
        ("mp3", "wav", "wav data"),
        ("opus", "wav", "not an ogg stream"),
        ("amr", "wav", "wav data"),
        ("pcm", "opus", "ogg"),
    ],
)
def test_declared_format_that_does_not_match_the_bytes_is_a_clear_error(
    tmp_path: Path, fmt: str, source: str, words: str
) -> None:
    data = (
        audio_file("goforward.wav").read_bytes()
        if source == "wav"
        else encode(tmp_path, "." + source, *(("-c:a", "libopus") if source == "opus" else ()))
    )
    with pytest.raises(AudioError) as info:
        feed_all(fmt, data)
    assert words in info.value.message.lower()


def test_unknown_format_and_rate_name_the_parameter() -> None:
    with pytest.raises(InvalidParameter) as info:
        make_decoder("flac", 16000)
    assert info.value.param == "format"
    with pytest.raises(InvalidParameter) as info:
        make_decoder("pcm", 10)
    assert info.value.param == "sample_rate"


def test_amr_nb_stream_decodes_in_pieces(tmp_path: Path) -> None:
    out = tmp_path / "clip.amr"
    subprocess.run(
        ["sox", str(audio_file("something.wav")), "-r", "8000", "-c", "1", "-t", "amr-nb", str(out)], check=True
    )
    samples = feed_all("amr", out.read_bytes(), rate=8000, piece=101)
    assert 2.8 < samples.shape[0] / 16000 < 3.3
    assert 0.05 < float(np.abs(samples).max()) <= 1.0
