"""The vocabulary second look on the real engine: it recovers terms the first decode garbled, and its
acoustic check rejects terms a focused prompt invents where nobody said them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import synth
from voxgate.audio.decode import decode_channel
from voxgate.engine import vocabulary_pass
from voxgate.engine.catalog import Catalog
from voxgate.engine.partial import WhisperStreamEngine
from voxgate.engine.recognizer import Recognizer
from voxgate.engine.types import Hotword, RecognitionOptions

TERMS = [
    "Kubernetes", "Szczepanski", "Quetzalcoatl", "Ouagadougou", "Nkechi", "Grafana", "Voxgate", "Tiziana",
    "Llewellyn", "Anandamide", "Okonkwo", "Brakebills", "Vandermolen", "Quillfeather", "Kettleborough",
    "Thorvaldsen",
]  # fmt: skip
VOCABULARY = [Hotword(term, 4, "en") for term in TERMS]
PROFILE = Catalog().resolve("fun-asr")


def recognize(recognizer: Recognizer, text: str, tmp_path: Path) -> str:
    audio = decode_channel(synth(text, tmp_path / "clip.wav", speed=175))
    sentences, _ = recognizer.transcribe_clip(audio, RecognitionOptions(language="en", hotwords=VOCABULARY), PROFILE)
    return " ".join(s.text for s in sentences)


@pytest.mark.parametrize(
    ("term", "text"),
    [
        ("anandamide", "The study measured anandamide levels in the blood."),
        ("vandermolen", "Ask Vandermolen about the shipping schedule."),
    ],
)
def test_second_look_recovers_a_garbled_term(
    recognizer: Recognizer, term: str, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert term in recognize(recognizer, text, tmp_path).lower()
    monkeypatch.setattr(vocabulary_pass, "SUSPECT_RESEMBLANCE", 101.0)  # second look off
    assert term not in recognize(recognizer, text, tmp_path).lower()


def test_acoustic_check_rejects_an_invented_term(
    recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every span counts as suspect: the focused prompt makes the decoder say "Quillfeather" for "The weather"
    monkeypatch.setattr(vocabulary_pass, "SUSPECT_RESEMBLANCE", 30.0)
    monkeypatch.setattr(vocabulary_pass, "SUSPECT_CONFIDENCE", 1.01)
    scored: list[str] = []
    original = vocabulary_pass.TextScorer.logprob

    def spy(self: vocabulary_pass.TextScorer, text: str) -> float:
        scored.append(text)
        return original(self, text)

    monkeypatch.setattr(vocabulary_pass.TextScorer, "logprob", spy)
    text = recognize(recognizer, "The weather was cold and windy all day.", tmp_path)
    assert any("quillfeather" in candidate.lower() for candidate in scored), scored  # it was proposed ...
    assert not any(term.lower() in text.lower() for term in TERMS), text  # ... and rejected
    assert "weather" in text.lower()


def test_real_time_final_gets_the_second_look(
    recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio = decode_channel(synth("Ask Vandermolen about the shipping schedule.", tmp_path / "rt.wav", speed=175))
    options = RecognitionOptions(language="en", hotwords=VOCABULARY)
    realtime = Catalog().resolve("fun-asr-realtime")

    def final_text() -> str:
        engine = WhisperStreamEngine(recognizer, realtime, options, partial_model="whisper-tiny.en")
        sentences, _ = engine.final(audio, 0, "en", speech_end_s=audio.shape[0] / 16000 - 0.2)
        assert engine.stats["fast_finals"] == 1  # the short-window path, not the recognizer's
        return " ".join(s.text for s in sentences)

    assert "vandermolen" in final_text().lower()
    monkeypatch.setattr(vocabulary_pass, "SUSPECT_RESEMBLANCE", 101.0)  # second look off
    assert "vandermolen" not in final_text().lower()
