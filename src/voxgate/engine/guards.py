"""Guards against Whisper's known failure modes: text on non-speech, repetition loops."""

from __future__ import annotations

from dataclasses import replace

from faster_whisper.transcribe import Segment

NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0
VERY_LOW_LOGPROB = -1.6
MAX_COMPRESSION = 2.4


def is_hallucination(segment: Segment) -> bool:
    """A segment the decoder probably invented: likely no speech and low confidence, or very low confidence."""
    if segment.no_speech_prob > NO_SPEECH_PROB and segment.avg_logprob < LOW_LOGPROB:
        return True
    return bool(segment.avg_logprob < VERY_LOW_LOGPROB)


def repeated_span(tokens: list[str], min_repeats: int = 3, max_ngram: int = 8) -> int | None:
    """Index where a loop starts: an n-gram repeated ``min_repeats`` times in a row; None if no loop."""
    n_tokens = len(tokens)
    for size in range(1, max_ngram + 1):
        for start in range(0, n_tokens - size * min_repeats + 1):
            gram = tokens[start : start + size]
            repeats = 1
            pos = start + size
            while pos + size <= n_tokens and tokens[pos : pos + size] == gram:
                repeats += 1
                pos += size
            if repeats >= min_repeats and (size > 1 or repeats >= 4):
                return start + size  # keep the first occurrence
    return None


def clean_segments(segments: list[Segment]) -> list[Segment]:
    """Drop invented segments; cut repetition loops inside a segment (keeping one occurrence)."""
    kept: list[Segment] = []
    for segment in segments:
        if is_hallucination(segment):
            continue
        words = segment.words or []
        if words and segment.compression_ratio > MAX_COMPRESSION:
            keys = [w.word.strip().lower().strip(".,!?。，！？") for w in words]
            cut = repeated_span(keys)
            if cut is not None:
                segment = replace(segment, words=words[:cut], text="".join(w.word for w in words[:cut]))
        kept.append(segment)
    return kept
