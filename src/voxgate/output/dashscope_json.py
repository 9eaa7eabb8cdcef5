"""The DashScope transcription-result JSON (protocol-spec §4.3) built from engine results."""

from __future__ import annotations

from typing import Any

from voxgate.engine.types import FileResult, Sentence, Transcript, Word


def word_json(word: Word) -> dict[str, Any]:
    return {
        "begin_time": word.begin_time,
        "end_time": word.end_time,
        "text": word.text,
        "punctuation": word.punctuation,
    }


def sentence_json(
    sentence: Sentence, sentence_id: int, *, words: bool = True, qwen_style: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "begin_time": sentence.begin_time,
        "end_time": sentence.end_time,
        "text": sentence.text,
        "sentence_id": sentence_id,
    }
    if sentence.speaker_id is not None:
        out["speaker_id"] = sentence.speaker_id
    if qwen_style and sentence.language:
        out["language"] = sentence.language
    if words:
        out["words"] = [word_json(w) for w in sentence.words]
    return out


def transcript_json(transcript: Transcript, *, words: bool = True, qwen_style: bool = False) -> dict[str, Any]:
    base = 0 if qwen_style else 1
    out: dict[str, Any] = {"channel_id": transcript.channel_id}
    if not qwen_style:
        out["content_duration_in_milliseconds"] = transcript.speech_duration_ms
    out["text"] = transcript.text
    out["sentences"] = [
        sentence_json(s, base + i, words=words, qwen_style=qwen_style) for i, s in enumerate(transcript.sentences)
    ]
    return out


def file_result_json(
    result: FileResult, file_url: str, *, family: str = "fun-asr", words: bool = True
) -> dict[str, Any]:
    """Result JSON for one file. ``family`` ``qwen-asr`` gives the qwen3-asr-flash-filetrans shape."""
    info = result.info
    if family == "qwen-asr":
        return {
            "file_url": file_url,
            "audio_info": {"format": info.format_name, "sample_rate": info.sample_rate},
            "transcripts": [transcript_json(t, words=words, qwen_style=True) for t in result.transcripts],
        }
    return {
        "file_url": file_url,
        "properties": {
            "audio_format": info.codec,
            "channels": [t.channel_id for t in result.transcripts],
            "original_sampling_rate": info.sample_rate,
            "original_duration_in_milliseconds": info.duration_ms or 0,
        },
        "transcripts": [transcript_json(t, words=words) for t in result.transcripts],
    }


def audio_info_annotations(language: str | None) -> list[dict[str, Any]]:
    """The ``annotations`` of a recognition answer: the detected language (qwen3-asr-flash shape)."""
    info: dict[str, Any] = {"type": "audio_info"}
    if language:
        info["language"] = language
    return [info]
