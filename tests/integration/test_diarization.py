"""Diarization, multi-channel files and post-processing switches end to end: real server, real engine,
the official dashscope SDK (file transcription, vocabularies, MultiModalConversation)."""

from __future__ import annotations

import itertools
import json
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dashscope
import httpx
import numpy as np
import pytest
from bench import speech_mixes
from bench.speech_mixes import SpeechMix
from dashscope import MultiModalConversation
from dashscope.audio.asr import Transcription, VocabularyService

from tests.conftest import API_KEY, RunningServer, audio_file, synth, wer

SR = 16_000
GOFORWARD = "go forward ten meters"
SOMETHING = "go somewhere and do something"


@dataclass
class Mix:
    """A mono file built from turns of known speakers; ``turns`` as (begin_ms, end_ms, speaker)."""

    path: Path
    turns: list[tuple[int, int, int]]


def read(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        assert handle.getframerate() == SR and handle.getnchannels() == 1
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)


def write(path: Path, samples: np.ndarray, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(SR)
        handle.writeframes(samples.astype(np.int16).tobytes())
    return path


def speaker_confusion(result: dict[str, Any], turns: list[tuple[int, int, int]]) -> tuple[float, int]:
    """Share of recognized word time given to the wrong speaker (best speaker mapping), speakers found."""
    timed: list[tuple[int, int, int]] = []  # duration, true speaker, hypothesis speaker
    for sentence in result["sentences"]:
        for word in sentence["words"]:
            middle = (word["begin_time"] + word["end_time"]) / 2
            truth = min(
                turns, key=lambda t: 0 if t[0] <= middle <= t[1] else min(abs(middle - t[0]), abs(middle - t[1]))
            )
            timed.append((max(1, word["end_time"] - word["begin_time"]), truth[2], sentence["speaker_id"]))
    found = sorted({h for _d, _t, h in timed})
    speakers = sorted({t[2] for t in turns})
    total = sum(d for d, _t, _h in timed)
    best = 0
    for mapping in itertools.permutations(speakers + [-1] * max(0, len(found) - len(speakers)), len(found)):
        match = dict(zip(found, mapping, strict=True))
        best = max(best, sum(d for d, t, h in timed if match[h] == t))
    return 1 - best / total, len(found)


@pytest.fixture(scope="module")
def sdk(server: RunningServer) -> Iterator[None]:
    saved = dashscope.base_http_api_url, dashscope.api_key
    dashscope.base_http_api_url = server.url + "/api/v1"
    dashscope.api_key = API_KEY
    yield
    dashscope.base_http_api_url, dashscope.api_key = saved


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("diarization")


def real_mix(folder: Path, mix: SpeechMix) -> Mix:
    """A mix of real readers (``bench/speech_mixes.py``) written to a file, turns in ms."""
    turns = [(a * 1000 // SR, b * 1000 // SR, speaker) for a, b, speaker in mix.turns]
    return Mix(speech_mixes.write(folder / "mix.wav", mix.audio), turns)


@pytest.fixture(scope="module")
def three_readers(folder: Path) -> Mix:
    """Three real readers from three recordings (dickens, beckett, nell), 8 turns of 3-13 s, 0.7 s gaps."""
    (mix,) = [m for m in speech_mixes.real_mixes() if m.name.startswith("3 readers, gaps")]
    return real_mix(folder, mix)


def transcribe(urls: list[str], **parameters: Any) -> list[dict[str, Any]]:
    """Run one file job through the legacy SDK; the downloaded result JSON per file."""
    submitted = Transcription.async_call(model="fun-asr", file_urls=urls, **parameters)
    assert submitted.status_code == 200, submitted.message
    done = Transcription.wait(task=submitted.output.task_id)
    assert done.output.task_status == "SUCCEEDED", done.output
    results = []
    for item in done.output["results"]:
        assert item["subtask_status"] == "SUCCEEDED", item
        response = httpx.get(item["transcription_url"], timeout=10)
        assert response.status_code == 200
        results.append(response.json())
    return results


# -- diarization ------------------------------------------------------------------------------------------
def test_three_real_readers_found_with_and_without_a_count(sdk: None, three_readers: Mix) -> None:
    url = three_readers.path.as_uri()
    for parameters in ({}, {"speaker_count": 3}):
        (result,) = transcribe([url], diarization_enabled=True, language_hints=["en"], **parameters)
        transcript = result["transcripts"][0]
        confusion, found = speaker_confusion(transcript, three_readers.turns)
        assert found == 3, parameters
        assert confusion <= 0.05, (parameters, confusion)
        assert transcript["sentences"][0]["speaker_id"] == 0  # ids in order of first appearance
        assert "best of times" in transcript["text"].lower()


def test_speaker_count_caps_the_estimate(sdk: None, folder: Path) -> None:
    mix = speech_mixes.build("three turns", ["d1s", "b1", "l1"], 0.7)
    path = speech_mixes.write(folder / "three_turns.wav", mix.audio)
    (result,) = transcribe([path.as_uri()], diarization_enabled=True, speaker_count=2)
    assert {s["speaker_id"] for s in result["transcripts"][0]["sentences"]} == {0, 1}


def test_one_reader_for_minutes_is_one_speaker(sdk: None, folder: Path) -> None:
    """Two minutes of one real reader, each pass at its own level and hiss: one speaker."""
    mix = speech_mixes.single_reader(2.0, seed=3)
    path = speech_mixes.write(folder / "one_reader.wav", mix.audio)
    (result,) = transcribe([path.as_uri()], diarization_enabled=True, language_hints=["en"])
    sentences = result["transcripts"][0]["sentences"]
    assert len(sentences) >= 10
    assert {s["speaker_id"] for s in sentences} == {0}


def test_without_diarization_there_is_no_speaker_id(sdk: None) -> None:
    (result,) = transcribe([audio_file("goforward.wav").as_uri()], language_hints=["en"])
    assert all("speaker_id" not in s for s in result["transcripts"][0]["sentences"])


# -- multi-channel ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stereo(folder: Path) -> Path:
    """Left: goforward.wav, right: something.wav (different speech per channel)."""
    left, right = read(audio_file("goforward.wav")), read(audio_file("something.wav"))
    length = max(left.size, right.size)
    frames = np.zeros((length, 2), dtype=np.int16)
    frames[: left.size, 0] = left
    frames[: right.size, 1] = right
    return write(folder / "stereo.wav", frames.reshape(-1), channels=2)


def test_stereo_channels_get_their_own_transcripts(sdk: None, stereo: Path) -> None:
    (result,) = transcribe([stereo.as_uri()], channel_id=[0, 1], diarization_enabled=True, language_hints=["en"])
    assert result["properties"]["channels"] == [0, 1]
    by_channel = {t["channel_id"]: t for t in result["transcripts"]}
    assert sorted(by_channel) == [0, 1]
    assert wer(GOFORWARD, by_channel[0]["text"]) <= 0.25
    assert wer(SOMETHING, by_channel[1]["text"]) <= 0.25
    for transcript in by_channel.values():
        assert {s["speaker_id"] for s in transcript["sentences"]} == {0}
    (right_only,) = transcribe([stereo.as_uri()], channel_id=[1], language_hints=["en"])
    assert [t["channel_id"] for t in right_only["transcripts"]] == [1]
    assert wer(SOMETHING, right_only["transcripts"][0]["text"]) <= 0.25


def test_stereo_through_the_engine(recognizer: Any, stereo: Path) -> None:
    from voxgate.engine.catalog import Catalog
    from voxgate.engine.types import RecognitionOptions

    options = RecognitionOptions(language="en", channels=[1, 0], diarization=True, speaker_count=2)
    result = recognizer.transcribe_file(stereo, options, Catalog().resolve("fun-asr"))
    assert result.info.channels == 2
    assert [t.channel_id for t in result.transcripts] == [1, 0]
    assert wer(SOMETHING, result.transcripts[0].text) <= 0.25
    assert wer(GOFORWARD, result.transcripts[1].text) <= 0.25


# -- post-processing through the public APIs --------------------------------------------------------------
def test_sensitive_words_masked_in_file_results(sdk: None) -> None:
    word_filter = json.dumps({"filter_with_signed": {"word_list": ["forward"]}})
    (result,) = transcribe([audio_file("goforward.wav").as_uri()], special_word_filter=word_filter)
    text = result["transcripts"][0]["text"]
    assert "*******" in text and "forward" not in text.lower()
    masked = [w for s in result["transcripts"][0]["sentences"] for w in s["words"] if "*" in w["text"]]
    assert masked and masked[0]["text"].strip() == "*******" and masked[0]["end_time"] > masked[0]["begin_time"]


def _zh_filler(folder: Path) -> Path:
    """嗯, then a short Mandarin phrase (espeak's pinyin voice)."""
    return synth("en4 , wo3 jue2 de5 ke3 yi3", folder / "zh_filler.wav", voice="cmn-latn-pinyin")


def test_chinese_filler_removed_only_when_asked(sdk: None, folder: Path) -> None:
    url = _zh_filler(folder).as_uri()
    (plain,) = transcribe([url], language_hints=["zh"])
    (cleaned,) = transcribe([url], language_hints=["zh"], disfluency_removal_enabled=True)
    plain_text, cleaned_text = plain["transcripts"][0]["text"], cleaned["transcripts"][0]["text"]
    assert plain_text.startswith("嗯")
    assert "嗯" not in cleaned_text and cleaned_text
    first = cleaned["transcripts"][0]["sentences"][0]
    assert first["begin_time"] == first["words"][0]["begin_time"] > 0


def test_english_fillers_removed_only_when_asked(sdk: None, folder: Path) -> None:
    url = synth("Hmm, well, um, let me check the schedule.", folder / "en_filler.wav").as_uri()
    (plain,) = transcribe([url], language_hints=["en"])
    (cleaned,) = transcribe([url], language_hints=["en"], disfluency_removal_enabled=True)
    plain_text, cleaned_text = plain["transcripts"][0]["text"], cleaned["transcripts"][0]["text"]
    assert "um" in plain_text.lower().replace(",", " ").split(), plain_text
    assert "um" not in cleaned_text.lower().replace(",", " ").split() and "schedule" in cleaned_text, cleaned_text
    words = [w["text"].strip().lower() for s in cleaned["transcripts"][0]["sentences"] for w in s["words"]]
    assert "um" not in words and "check" in words


def test_chinese_itn_and_sensitive_words_in_file_results(sdk: None, folder: Path) -> None:
    """三百二十五块钱 (espeak's pinyin voice): numerals to digits only with ITN; a listed word masked."""
    speech = synth("san1 bai3 er4 shi2 wu3 kuai4 qian2", folder / "zh_money.wav", voice="cmn-latn-pinyin", speed=130)
    (plain,) = transcribe([speech.as_uri()], language_hints=["zh"])
    (normalized,) = transcribe([speech.as_uri()], language_hints=["zh"], inverse_text_normalization_enabled=True)
    plain_text, normalized_text = plain["transcripts"][0]["text"], normalized["transcripts"][0]["text"]
    assert "三百二十五" in plain_text and "325" not in plain_text, plain_text
    assert "325" in normalized_text and "三百" not in normalized_text, normalized_text
    word_filter = json.dumps({"filter_with_signed": {"word_list": ["块钱"]}})
    (masked,) = transcribe([speech.as_uri()], language_hints=["zh"], special_word_filter=word_filter)
    masked_text = masked["transcripts"][0]["text"]
    assert "**" in masked_text and "块钱" not in masked_text and "三百二十五" in masked_text, masked_text


def _user_audio(path: Path, context: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": [{"text": context}]},
        {"role": "user", "content": [{"audio": f"file://{path}"}]},
    ]


def test_english_itn_switch_through_multimodal_conversation(sdk: None, folder: Path) -> None:
    speech = synth("The order has one hundred and twenty three items and costs forty five dollars.", folder / "n.wav")
    context = "Numbers are always spelled out in words: twenty three, forty five, one hundred and six."
    texts = {}
    for itn in (False, True):
        response = MultiModalConversation.call(
            model="qwen3-asr-flash",
            messages=_user_audio(speech, context),
            asr_options={"language": "en", "enable_itn": itn},
        )
        assert response.status_code == 200, response
        texts[itn] = response.output.choices[0].message.content[0]["text"]
    assert "123" in texts[True] and "$45" in texts[True], texts
    assert "123" not in texts[False] and "hundred" in texts[False].lower(), texts


def test_vocabulary_changes_a_rare_term(sdk: None, folder: Path) -> None:
    speech = synth("Mister Okonkwo approved the budget.", folder / "okonkwo.wav")
    (before,) = transcribe([speech.as_uri()], language_hints=["en"])
    assert "okonkwo" not in before["transcripts"][0]["text"].lower()
    service = VocabularyService()
    vocabulary_id = service.create_vocabulary(
        target_model="fun-asr", prefix="diar", vocabulary=[{"text": "Okonkwo", "weight": 4, "lang": "en"}]
    )
    try:
        (after,) = transcribe([speech.as_uri()], language_hints=["en"], vocabulary_id=vocabulary_id)
    finally:
        service.delete_vocabulary(vocabulary_id)
    transcript = after["transcripts"][0]
    assert "Okonkwo" in transcript["text"]
    assert wer("mister okonkwo approved the budget", transcript["text"].replace("Mr.", "mister")) <= 0.2
    sentence = next(s for s in transcript["sentences"] if "Okonkwo" in s["text"])
    term = next(w for w in sentence["words"] if "Okonkwo" in w["text"])
    assert sentence["begin_time"] <= term["begin_time"] < term["end_time"] <= sentence["end_time"]
