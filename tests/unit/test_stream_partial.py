"""Short-window decoding for streaming, on the real bundled models (tiny.en and base)."""

from __future__ import annotations

import wave
from collections.abc import Iterator

import jiwer
import numpy as np
import pytest
from faster_whisper import WhisperModel

from tests.conftest import MODEL_DIR, audio_file
from voxgate.engine.partial import PartialDecoder


def speech(name: str) -> np.ndarray:
    with wave.open(str(audio_file(name)), "rb") as handle:
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").astype(np.float32) / 32768


def wer(reference: str, hypothesis: str) -> float:
    clean = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.Strip()])
    return float(jiwer.wer(clean(reference), clean(hypothesis.replace("10", "ten")) or "<empty>"))


@pytest.fixture(scope="module")
def models() -> Iterator[dict[str, PartialDecoder]]:
    yield {
        name: PartialDecoder(
            WhisperModel(str(MODEL_DIR / name), device="cpu", compute_type="int8", cpu_threads=2, local_files_only=True)
        )
        for name in ("whisper-tiny.en", "whisper-base")
    }


def test_partial_on_a_short_window_is_accurate(models: dict[str, PartialDecoder]) -> None:
    hyp = models["whisper-tiny.en"].decode(speech("goforward.wav"), language=None)
    assert hyp.language == "en" and wer("go forward ten meters", hyp.text) <= 0.25, hyp


def test_partial_continues_the_confirmed_prefix(models: dict[str, PartialDecoder]) -> None:
    hyp = models["whisper-tiny.en"].decode(speech("something.wav"), language="en", prefix="Go somewhere")
    assert hyp.text.startswith("Go somewhere") and wer("go somewhere and do something", hyp.text) <= 0.25, hyp


def test_multilingual_partial_waits_for_enough_speech_to_guess_the_language(models: dict[str, PartialDecoder]) -> None:
    audio = speech("goforward.wav")
    assert models["whisper-base"].decode(audio[: 16000 // 2], language=None).text == ""
    full = models["whisper-base"].decode(audio, language=None)
    assert full.language == "en" and wer("go forward ten meters", full.text) <= 0.25


def test_final_on_a_short_window_has_word_times_inside_the_speech(models: dict[str, PartialDecoder]) -> None:
    audio = np.concatenate([np.zeros(4800, dtype=np.float32), speech("something.wav")])
    decoded = models["whisper-base"].decode_final(audio, language="en", prompt=None, speech_end_s=2.7)
    assert decoded is not None
    words, language = decoded
    assert language == "en"
    assert wer("go somewhere and do something", "".join(w[2] for w in words)) <= 0.25
    starts = [w[0] for w in words]
    assert starts == sorted(starts) and starts[0] >= 0 and words[-1][1] <= len(audio) / 16000 + 0.1


def test_final_guards_refuse_text_that_ends_long_before_the_speech(models: dict[str, PartialDecoder]) -> None:
    audio = speech("goforward.wav")
    # the VAD claims speech went on 3 s longer than the words reach: the short window is not trusted
    assert models["whisper-base"].decode_final(audio, language="en", prompt=None, speech_end_s=5.0) is None


def test_silence_invents_nothing(models: dict[str, PartialDecoder]) -> None:
    silence = np.zeros(16000 * 2, dtype=np.float32)
    assert models["whisper-tiny.en"].decode(silence, language="en").text == ""
    decoded = models["whisper-base"].decode_final(silence, language="en", prompt=None, speech_end_s=None)
    assert decoded is None or decoded[0] == []
