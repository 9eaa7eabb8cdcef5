"""SRT, WebVTT and plain-text renderings of transcripts."""

from __future__ import annotations

from collections.abc import Sequence

from voxgate.engine.types import Sentence, Transcript


def _clock(ms: int, sep: str) -> str:
    hours, rest = divmod(max(0, ms), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{sep}{millis:03d}"


def _label(sentence: Sentence) -> str:
    return f"[speaker {sentence.speaker_id}] " if sentence.speaker_id is not None else ""


def to_srt(sentences: Sequence[Sentence]) -> str:
    blocks = []
    for index, s in enumerate(sentences, start=1):
        blocks.append(f"{index}\n{_clock(s.begin_time, ',')} --> {_clock(s.end_time, ',')}\n{_label(s)}{s.text}\n")
    return "\n".join(blocks)


def to_vtt(sentences: Sequence[Sentence]) -> str:
    lines = ["WEBVTT", ""]
    for s in sentences:
        lines.append(f"{_clock(s.begin_time, '.')} --> {_clock(s.end_time, '.')}")
        lines.append(f"{_label(s)}{s.text}")
        lines.append("")
    return "\n".join(lines)


def to_text(transcripts: Sequence[Transcript]) -> str:
    if len(transcripts) == 1:
        return transcripts[0].text + "\n"
    return "".join(f"[channel {t.channel_id}] {t.text}\n" for t in transcripts)
