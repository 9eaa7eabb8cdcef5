"""The recognition engine on real audio: accuracy, timestamps, formats, channels, non-speech, bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import audio_file, join_wavs, synth, wer
from voxgate.audio.decode import decode_channel, probe
from voxgate.engine.catalog import Catalog
from voxgate.engine.partial import WhisperStreamEngine
from voxgate.engine.recognizer import Recognizer, pack_windows, speech_runs
from voxgate.engine.scheduler import WorkClass
from voxgate.engine.types import RecognitionOptions, Sentence
from voxgate.errors import AudioError, InvalidParameter
from voxgate.jobs import blocks

PROFILE = Catalog().resolve("fun-asr")
GOFORWARD = "go forward ten meters"
SOMETHING = "go somewhere and do something"
LONG_TEXT = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single step. "
    "Please remember to bring your umbrella tomorrow because the forecast says it will rain all afternoon."
)

# container/extension -> ffmpeg arguments for the audio codec
FORMATS: dict[str, list[str]] = {
    "aac": ["-c:a", "aac"],
    "flac": ["-c:a", "flac"],
    "m4a": ["-c:a", "aac"],
    "mp3": ["-c:a", "libmp3lame"],
    "ogg": ["-c:a", "libvorbis"],
    "opus": ["-c:a", "libopus"],
    "wav": ["-c:a", "pcm_s16le", "-ar", "44100", "-ac", "2"],
    "wma": ["-c:a", "wmav2"],
    "avi": ["-c:a", "libmp3lame"],
    "flv": ["-c:a", "aac", "-ar", "44100"],
    "mkv": ["-c:a", "libopus"],
    "mov": ["-c:a", "aac"],
    "mp4": ["-c:a", "aac"],
    "mpeg": ["-c:a", "mp2", "-ar", "44100"],
    "webm": ["-c:a", "libopus"],
    "wmv": ["-c:a", "wmav2"],
}
VIDEO = {"avi", "mp4", "mkv", "mov", "webm", "wmv", "flv", "mpeg"}


def transcribe(recognizer: Recognizer, path: Path, **options: object) -> list:
    result = recognizer.transcribe_file(path, RecognitionOptions(**options), PROFILE)  # type: ignore[arg-type]
    return result.transcripts


def test_real_speech_wer(recognizer: Recognizer) -> None:
    for name, reference in (("goforward.wav", GOFORWARD), ("something.wav", SOMETHING)):
        [transcript] = transcribe(recognizer, audio_file(name))
        assert transcript.language == "en"
        assert wer(reference, transcript.text) <= 0.25, transcript.text


def test_longer_speech_sentences_and_timestamps(recognizer: Recognizer, tmp_path: Path) -> None:
    path = synth(LONG_TEXT, tmp_path / "long.wav")
    duration_ms = probe(path).duration_ms or 0
    [transcript] = transcribe(recognizer, path)
    assert wer(LONG_TEXT, transcript.text) <= 0.15, transcript.text
    assert len(transcript.sentences) >= 3
    last_end = 0
    for sentence in transcript.sentences:
        assert sentence.begin_time <= sentence.end_time
        assert sentence.words and sentence.words[0].begin_time >= sentence.begin_time
        for word in sentence.words:
            assert last_end <= word.begin_time <= word.end_time <= duration_ms + 50
            last_end = word.end_time
    assert 0 < transcript.speech_duration_ms <= duration_ms


def test_hotwords_bias_a_rare_name(recognizer: Recognizer, tmp_path: Path) -> None:
    from voxgate.engine.types import Hotword

    path = synth("Please send the report to Xylophia Brandtmeier before noon.", tmp_path / "name.wav")
    [plain] = transcribe(recognizer, path)
    [biased] = transcribe(recognizer, path, hotwords=[Hotword("Xylophia Brandtmeier", 5)])
    assert "brandtmeier" in biased.text.lower(), biased.text
    assert "report" in plain.text.lower()


@pytest.mark.parametrize("fmt", [*sorted(FORMATS), "amr"])
def test_every_listed_format_decodes(fmt: str, tmp_path: Path) -> None:
    source = audio_file("goforward.wav")
    out = tmp_path / f"clip.{fmt}"
    if fmt == "amr":
        subprocess.run(["sox", str(source), "-r", "8000", "-c", "1", "-t", "amr-nb", str(out)], check=True)
    else:
        video = ["-f", "lavfi", "-i", "color=c=black:s=64x64:r=25", "-shortest"] if fmt in VIDEO else []
        subprocess.run(
            ["ffmpeg", "-y", "-loglevel", "error", "-i", str(source), *video, *FORMATS[fmt], str(out)],
            check=True,
        )
    reference = decode_channel(source)
    decoded = decode_channel(out)
    assert decoded.dtype == np.float32
    assert abs(decoded.shape[0] - reference.shape[0]) < 16000 * 0.2, (decoded.shape, reference.shape)
    assert 0.02 < float(np.abs(decoded).max()) <= 1.0


@pytest.mark.parametrize("fmt", ["mp3", "opus", "amr", "mp4"])
def test_lossy_formats_transcribe(recognizer: Recognizer, fmt: str, tmp_path: Path) -> None:
    source = audio_file("something.wav")
    out = tmp_path / f"clip.{fmt}"
    if fmt == "amr":
        subprocess.run(["sox", str(source), "-r", "8000", "-c", "1", "-t", "amr-nb", str(out)], check=True)
    else:
        subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(source), str(out)], check=True)
    [transcript] = transcribe(recognizer, out)
    assert wer(SOMETHING, transcript.text) <= 0.25, transcript.text


def test_stereo_channels_are_separate(recognizer: Recognizer, tmp_path: Path) -> None:
    out = tmp_path / "stereo.wav"
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-i",
            str(audio_file("goforward.wav")),
            "-i",
            str(audio_file("something.wav")),
            "-filter_complex",
            "[0:a][1:a]amerge=inputs=2[a]",
            "-map",
            "[a]",
            "-ac",
            "2",
            str(out),
        ],
        check=True,
    )
    left, right = transcribe(recognizer, out, channels=[0, 1])
    assert (left.channel_id, right.channel_id) == (0, 1)
    assert wer(GOFORWARD, left.text) <= 0.25, left.text
    assert wer(SOMETHING, right.text) <= 0.25, right.text
    with pytest.raises(InvalidParameter) as info:
        transcribe(recognizer, out, channels=[2])
    assert info.value.param == "channel_id"


def _write_wav(path: Path, samples: np.ndarray) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "s16le",
            "-ar",
            "16000",
            "-ac",
            "1",
            "-i",
            "pipe:0",
            str(path),
        ],
        input=pcm,
        check=True,
    )
    return path


@pytest.mark.parametrize("kind", ["silence", "noise", "tone"])
def test_non_speech_gives_no_words(recognizer: Recognizer, kind: str, tmp_path: Path) -> None:
    n = 16000 * 60
    rng = np.random.default_rng(7)
    samples = {
        "silence": np.zeros(n),
        "noise": rng.normal(0, 0.2, n),
        "tone": 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000),
    }[kind]
    [transcript] = transcribe(recognizer, _write_wav(tmp_path / f"{kind}.wav", samples))
    assert transcript.sentences == []
    assert transcript.text == ""
    assert transcript.duration_ms == 60_000


def test_empty_corrupt_and_truncated_input(recognizer: Recognizer, tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp3"
    garbage.write_bytes(np.random.default_rng(1).bytes(50_000))
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio at all\n" * 100)
    truncated = tmp_path / "truncated.wav"
    data = audio_file("numbers.wav").read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    expected = {
        empty: "empty",
        garbage: ("not_audio", "corrupt"),
        text: ("not_audio", "corrupt"),
        truncated: "truncated",
    }
    for path, reasons in expected.items():
        with pytest.raises(AudioError) as info:
            transcribe(recognizer, path)
        assert info.value.reason in (reasons if isinstance(reasons, tuple) else (reasons,)), (
            path,
            info.value,
        )
        assert info.value.message


def test_duration_limit_enforced_while_reading(tmp_path: Path) -> None:
    from voxgate.audio.decode import iter_channel

    path = _write_wav(tmp_path / "long.wav", np.zeros(16000 * 20))
    chunks = []
    with pytest.raises(AudioError) as info:
        for chunk in iter_channel(path, max_duration_s=5, chunk_seconds=1):
            chunks.append(chunk)
    assert info.value.reason == "too_long"
    assert sum(c.shape[0] for c in chunks) <= 16000 * 6


def test_a_short_clip_is_encoded_once_for_language_and_words(recognizer: Recognizer, tmp_path: Path) -> None:
    """Language identification and decoding of a one-window clip share one encoder pass (before, each
    encoded the window), and give the same words as a decode told the language (which never identifies)."""
    audio = decode_channel(audio_file("something.wav"), 0)
    profile = Catalog().resolve("qwen3-asr-flash")
    model = recognizer.model(profile.model, WorkClass.SYNC.tier)
    calls: list[tuple[int, ...]] = []
    real_encode = model.encode

    def counting_encode(features: np.ndarray) -> object:
        calls.append(tuple(features.shape))
        return real_encode(features)

    model.encode = counting_encode  # type: ignore[method-assign]
    try:
        found, language = recognizer.transcribe_clip(audio, RecognitionOptions(), profile)
        identified_calls = list(calls)
        calls.clear()
        told, _ = recognizer.transcribe_clip(audio, RecognitionOptions(language="en"), profile)
    finally:
        del model.encode
    assert language == "en"
    assert identified_calls == [(1, 80, 3000)]  # one window, encoded once for both steps
    assert calls == [(1, 80, 3000)]  # told the language: the decoder's own pass, the same single encode
    assert " ".join(s.text for s in found) == " ".join(s.text for s in told)
    assert wer(SOMETHING, " ".join(s.text for s in found)) <= 0.25


def test_a_worker_decodes_the_windows_the_cutter_packed(recognizer: Recognizer, tmp_path: Path) -> None:
    """A block handed to a worker node (its samples and VAD runs written to the job's folder) decodes to the
    same sentences as in process; a block written without its runs finds them again by VAD."""
    [block] = list(recognizer.file_blocks(audio_file("goforward.wav"), 0))
    assert block.speech
    path = tmp_path / "c0-b0.f32"
    blocks._write_block(path, block)
    read = blocks._read_block(path, block.offset)
    assert read.speech == block.speech
    assert np.array_equal(read.audio, block.audio)
    path.with_suffix(".runs.json").unlink()
    found = blocks._read_block(path, block.offset)
    assert found.speech == speech_runs(block.audio)
    texts = [
        [s.text for s in recognizer.decode_file_block(PROFILE, RecognitionOptions(), "en", b)]
        for b in (block, read, found)
    ]
    assert texts[0] == texts[1] == texts[2]
    assert wer(GOFORWARD, " ".join(texts[1])) <= 0.25


def test_a_files_language_is_read_off_windows_it_then_decodes(recognizer: Recognizer, tmp_path: Path) -> None:
    """Identifying a file's language encodes its first packed windows, and the decoder reuses those outputs:
    every window is encoded once in all, and the words are those of a decode told the language."""
    parts = [audio_file("two_cities_16k.wav"), audio_file("beckett_16k.wav")]
    path = join_wavs(parts, tmp_path / "two.wav", pause_s=1.0)
    windows = sum(len(pack_windows(b.audio, b.speech)) for b in recognizer.file_blocks(path, 0))
    assert windows >= 2
    model = recognizer.model(PROFILE.model, WorkClass.FILE.tier)
    rows: list[int] = []
    real_encode = model.encode

    def counting_encode(features: np.ndarray) -> object:
        rows.append(int(features.shape[0]))
        return real_encode(features)

    model.encode = counting_encode  # type: ignore[method-assign]
    try:
        [found] = transcribe(recognizer, path)
        identified = sum(rows)
        rows.clear()
        [told] = transcribe(recognizer, path, language="en")
    finally:
        del model.encode
    assert found.language == "en"
    assert identified == windows  # before: up to three more encoder passes for identification alone
    assert sum(rows) == windows
    assert found.text == told.text


def test_a_final_is_never_prompted_with_text_of_its_own_audio(recognizer: Recognizer) -> None:
    """A speculative final given up when the reader went on covers the start of the piece decoded next: as its
    prompt it made the decoder skip those words as already said ("In short, the period ..." came out as "The
    present period ..."). A piece's prompt is the latest text that ends before its audio."""
    audio = decode_channel(audio_file("two_cities_16k.wav"), 0)
    start_ms, end_ms = 28_900, 36_600  # "In short, the period ... insisted on its being received"
    engine = WhisperStreamEngine(
        recognizer,
        Catalog().resolve("fun-asr-realtime"),
        RecognitionOptions(language="en"),
        partial_model="whisper-tiny.en",
    )
    before = "We were all going direct to heaven, we were all going direct the other way."
    engine._remember([Sentence(24_584, 28_164, before)])
    engine._remember([Sentence(29_084, 32_184, "In short, the period was so far like the present period.")])
    assert engine._text_before(start_ms) == before
    sentences, _ = engine.final(audio[start_ms * 16 : end_ms * 16], start_ms, "en")
    text = " ".join(s.text for s in sentences)
    assert engine.stats["fast_finals"] == 1  # the short-window path, which takes the prompt
    assert text.lower().startswith("in short"), text
    reference = "in short the period was so far like the present period that some of its noisiest authorities insisted"
    assert wer(reference + " on its being received", text) <= 0.15
