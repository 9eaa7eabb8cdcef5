"""Turn decoder words into :class:`Word` objects and group them into sentences."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from voxgate.engine.types import CJK_LANGUAGES, Sentence, Word

SENTENCE_END = frozenset(".?!。？！…")
# English words whose full stop marks an abbreviation, not the end of a sentence ("Mr. Okonkwo").
ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "e.g", "i.e", "fig", "mt", "approx"}
)
PUNCTUATION = frozenset(".,?!;:。，？！；：、…\"'“”‘’()（）《》「」『』-—")


def split_punctuation(raw: str) -> tuple[str, str]:
    """Split trailing punctuation off a decoder word: ``" world,"`` -> (``" world"``, ``","``)."""
    end = len(raw)
    while end > 0 and raw[end - 1] in PUNCTUATION:
        end -= 1
    text, punct = raw[:end], raw[end:]
    if not text.strip() and punct:
        return "", punct.strip()
    return text, punct


def make_words(raw_words: Iterable[tuple[float, float, str, float]], offset_ms: int = 0) -> list[Word]:
    """Build words from ``(start_s, end_s, text, probability)``; punctuation-only tokens attach left."""
    words: list[Word] = []
    for start, end, raw, prob in raw_words:
        text, punct = split_punctuation(raw)
        begin_ms = offset_ms + round(start * 1000)
        end_ms = max(begin_ms, offset_ms + round(end * 1000))
        if not text:
            if words and punct:
                words[-1].punctuation += punct
            continue
        words.append(Word(begin_ms, end_ms, text, punct, float(prob)))
    return _monotonic(words)


def _monotonic(words: list[Word]) -> list[Word]:
    last = 0
    for word in words:
        word.begin_time = max(word.begin_time, last)
        word.end_time = max(word.end_time, word.begin_time)
        last = word.end_time
    return words


def sentence_text(words: Sequence[Word], language: str | None) -> str:
    text = "".join(w.text + w.punctuation for w in words)
    return text.strip() if language not in CJK_LANGUAGES else text.replace(" ", "")


def group_sentences(
    words: Sequence[Word],
    language: str | None,
    *,
    max_pause_ms: int = 1000,
    max_sentence_ms: int = 20_000,
) -> list[Sentence]:
    """Cut at sentence-final punctuation, at pauses longer than ``max_pause_ms``, and at a maximum length."""
    sentences: list[Sentence] = []
    current: list[Word] = []

    def flush() -> None:
        if current:
            sentences.append(
                Sentence(
                    begin_time=current[0].begin_time,
                    end_time=current[-1].end_time,
                    text=sentence_text(current, language),
                    words=list(current),
                    language=language,
                )
            )
            current.clear()

    for word in words:
        if current:
            pause = word.begin_time - current[-1].end_time
            too_long = word.end_time - current[0].begin_time > max_sentence_ms
            if pause > max_pause_ms or too_long:
                flush()
        current.append(word)
        if word.punctuation and word.punctuation[-1] in SENTENCE_END and not _abbreviation(word):
            flush()
    flush()
    return sentences


def _abbreviation(word: Word) -> bool:
    return word.punctuation == "." and word.text.strip().lower() in ABBREVIATIONS


def words_of(sentences: Iterable[Sentence]) -> list[Word]:
    return [w for s in sentences for w in s.words]
