"""Transcript post-processing applied the same way by every API: script conversion and text clean-up."""

from __future__ import annotations

from functools import lru_cache

from opencc import OpenCC

from voxgate.engine.sentences import sentence_text
from voxgate.engine.types import RecognitionOptions, Sentence


@lru_cache(maxsize=2)
def _converter(config: str) -> OpenCC:
    return OpenCC(config)


def to_simplified(text: str) -> str:
    return str(_converter("t2s").convert(text))


def apply(sentences: list[Sentence], options: RecognitionOptions, language: str | None) -> list[Sentence]:
    """Apply the switches in ``options`` to recognized sentences (in place) and return them."""
    if language in ("zh", "yue") and options.simplified_chinese:
        for sentence in sentences:
            for word in sentence.words:
                word.text = to_simplified(word.text)
            sentence.text = sentence_text(sentence.words, language)
    return sentences
