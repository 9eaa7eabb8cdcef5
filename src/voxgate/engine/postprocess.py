"""Transcript post-processing applied the same way by every API.

Each step is a switch of :class:`RecognitionOptions` and rewrites the words of a sentence, never just its
text, so that timestamps stay consistent: removed words disappear, words merged into one (a number
written as digits, a corrected vocabulary term) span the union of their times, and the sentence text and
times are recomputed from the words afterwards.

Order: Simplified Chinese, filler removal, vocabulary (hotword) correction, inverse text normalization,
sensitive-word masking, full/half-width normalization (zh/ja).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from opencc import OpenCC
from rapidfuzz import fuzz

from voxgate.engine.sentences import SENTENCE_END, sentence_text, split_punctuation
from voxgate.engine.types import CJK_LANGUAGES, Hotword, RecognitionOptions, Sentence, Word

# -- Simplified / Traditional ------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _converter(config: str) -> OpenCC:
    return OpenCC(config)


def to_simplified(text: str) -> str:
    return str(_converter("t2s").convert(text))


def to_traditional(text: str) -> str:
    return str(_converter("s2t").convert(text))


# -- filler words ----------------------------------------------------------------------------------------
EN_FILLERS = frozenset({"um", "umm", "uh", "uhh", "uhm", "er", "erm", "ah", "hmm", "hm", "mm", "mhm"})
EN_FILLER_PHRASES = (("you", "know"), ("i", "mean"))  # removed only when set off by commas
ZH_FILLERS = frozenset({"嗯", "呃", "额", "唔"})  # removed anywhere as whole words
ZH_SOFT_FILLERS = frozenset({"啊", "那个", "就是", "这个"})  # removed only at the start or before a comma
COMMAS = frozenset(",，、")


def _bare(word: Word) -> str:
    return word.text.strip().lower()


def _is_zh_filler(text: str, soft: bool) -> bool:
    if text and all(ch in "".join(ZH_FILLERS) for ch in text):
        return True
    return soft and text in ZH_SOFT_FILLERS


def remove_fillers(words: list[Word], language: str | None) -> list[Word]:
    """Drop hesitation words (en: um, uh, er, ah, hmm, and comma-bounded "you know" / "I mean";
    zh: 嗯 呃, and 啊 那个 就是 when they open the sentence or precede a comma)."""
    drop: set[int] = set()
    cjk = language in ("zh", "yue")
    for i, word in enumerate(words):
        bare = _bare(word)
        after_pause = i == 0 or bool(words[i - 1].punctuation)
        if cjk:
            soft = after_pause or bool(set(word.punctuation) & COMMAS)
            if _is_zh_filler(bare, soft):
                drop.add(i)
        elif bare in EN_FILLERS:
            drop.add(i)
        elif i + 1 < len(words) and (bare, _bare(words[i + 1])) in EN_FILLER_PHRASES:
            closes = bool(set(words[i + 1].punctuation) & COMMAS) and not word.punctuation
            if closes and after_pause:
                drop.update((i, i + 1))
    if not drop:
        return words
    kept: list[Word] = []
    for i, word in enumerate(words):
        if i not in drop:
            kept.append(word)
            continue
        final = "".join(ch for ch in word.punctuation if ch in SENTENCE_END)
        if final and kept and not any(ch in SENTENCE_END for ch in kept[-1].punctuation):
            kept[-1].punctuation = kept[-1].punctuation.rstrip(",，、") + final
    if kept and not cjk and words and 0 in drop:
        first = kept[0]
        stripped = first.text.lstrip()
        if stripped[:1].islower() and not (stripped.startswith("i ") or stripped == "i"):
            first.text = first.text[: len(first.text) - len(stripped)] + stripped[:1].upper() + stripped[1:]
    return kept


# -- rewriting character spans of a sentence ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Layout:
    """The sentence as one string (word text + punctuation) and where each word's characters are."""

    text: str
    owner: list[int]  # word index per character
    in_text: list[bool]  # True: the character is in the word's text, False: in its punctuation


def _layout(words: Sequence[Word]) -> _Layout:
    chars: list[str] = []
    owner: list[int] = []
    in_text: list[bool] = []
    for index, word in enumerate(words):
        for part, flag in ((word.text, True), (word.punctuation, False)):
            chars.extend(part)
            owner.extend([index] * len(part))
            in_text.extend([flag] * len(part))
    return _Layout("".join(chars), owner, in_text)


def _replace_spans(words: list[Word], layout: _Layout, edits: list[tuple[int, int, str]]) -> list[Word]:
    """Replace character spans ``[start, end)`` of the layout text; touched words merge into one word."""
    if not edits:
        return words
    edits = sorted(edits)
    out: list[Word] = []
    next_word = 0
    for start, end, replacement in edits:
        first, last = layout.owner[start], layout.owner[end - 1]
        if first < next_word:  # overlaps an earlier edit
            continue
        out.extend(words[next_word:first])
        first_start = layout.owner.index(first)
        last_end = len(layout.owner) - layout.owner[::-1].index(last)
        combined = layout.text[first_start:start] + replacement + layout.text[end:last_end]
        text, punctuation = split_punctuation(combined)
        if not text.strip():
            text, punctuation = combined, ""
        probability = min(w.probability for w in words[first : last + 1])
        out.append(Word(words[first].begin_time, words[last].end_time, text, punctuation, probability))
        next_word = last + 1
    out.extend(words[next_word:])
    return out


# -- inverse text normalization -------------------------------------------------------------------------
_ITN_LANGUAGES = {"en": "en", "zh": "zh", "yue": "zh", "ja": "ja"}
_SKIP_ORDINALS = frozenset({"first", "second", "third"})  # "wait a second", "first of all"
_ZH_SKIP = frozenset({"十分", "一一", "万一"})  # adverbs and idioms that only look like numbers


@lru_cache(maxsize=4)
def _itn_normalizer(lang: str) -> Any:
    from wetext import Normalizer

    return Normalizer(lang=lang, operator="itn")


def _itn_edit(mapping: Any, lang: str) -> str | None:
    source, target = str(mapping.input_text), str(mapping.output_text)
    if lang == "en":
        if mapping.token_type == "ordinal" and source.strip().lower() in _SKIP_ORDINALS:
            return None
        return re.sub(r"(\d) %", r"\1%", target).strip()
    if source in _ZH_SKIP:
        return None
    if lang == "zh" and mapping.token_type in ("date", "time"):
        import cn2an

        converted = str(cn2an.transform(source, "cn2an"))
        return converted if converted != source else None
    return target.strip()


def inverse_normalize(words: list[Word], language: str | None) -> list[Word]:
    """Spoken-form numbers, dates, times, money, measures to written form (wetext; cn2an for zh dates)."""
    lang = _ITN_LANGUAGES.get(language or "")
    if lang is None or not words:
        return words
    layout = _layout(words)
    try:
        result = _itn_normalizer(lang).normalize_with_mapping(layout.text)
    except Exception:  # the FST rejects odd input: leave the sentence as it is
        return words
    edits: list[tuple[int, int, str]] = []
    for mapping in result.mappings:
        if mapping.kind != "replace" or mapping.input_end <= mapping.input_start:
            continue
        replacement = _itn_edit(mapping, lang)
        if replacement is None or replacement == mapping.input_text:
            continue
        start, end = int(mapping.input_start), int(mapping.input_end)
        if layout.text[start:end] != mapping.input_text:  # offsets must point into our own text
            continue
        while start < end and layout.text[start].isspace():
            start += 1
        if start < end:
            edits.append((start, end, replacement))
    return _replace_spans(words, layout, edits)


# -- vocabulary (hotword) correction --------------------------------------------------------------------
def _squash(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if ch.isalnum())


_SOUND_ALIKE = (
    ("ph", "f"),
    ("ck", "k"),
    ("sch", "sk"),
    ("dg", "j"),
    ("gh", "g"),
    ("th", "t"),
    ("c", "k"),
    ("q", "k"),
    ("x", "ks"),
    ("z", "s"),
    ("v", "f"),
    ("w", "u"),
)


def sound_key(text: str) -> str:
    """A rough English sound key: similar-sounding consonants merged, vowel runs reduced to one."""
    key = _squash(text)
    for spelled, sound in _SOUND_ALIKE:
        key = key.replace(spelled, sound)
    key = re.sub(r"[aeiouy]+", "a", key)
    return re.sub(r"(.)\1+", r"\1", key)


def similarity(spoken: str, term: str, cjk: bool) -> float:
    """0-100: spelling similarity, blended for Latin script with sound-key similarity."""
    spelled = float(fuzz.ratio(_squash(spoken), _squash(term)))
    if cjk or not spoken.isascii():
        return spelled
    if spelled < 60:
        return spelled
    return 0.4 * spelled + 0.6 * float(fuzz.ratio(sound_key(spoken), sound_key(term)))


SINGLE_WORD_MARGIN = 6.0


def hotword_threshold(term: Hotword) -> float:
    """Similarity (0-100) a span needs to become ``term``: 90 at weight 1 down to 78 at weight 5; terms
    shorter than 6 letters need 8 more."""
    weight = min(5, max(1, term.weight))
    threshold = 93.0 - 3.0 * weight
    length = len(_squash(term.text))
    if length < 6:
        threshold += 8.0
    return min(threshold, 97.0)


def correct_hotwords(words: list[Word], hotwords: Sequence[Hotword], language: str | None) -> list[Word]:
    """Rewrite word spans that nearly spell or sound like a vocabulary term (rapidfuzz over word n-grams)."""
    terms = [h for h in hotwords if h.text.strip() and h.applies_to(language)]
    terms.sort(key=lambda h: (-h.weight, -len(h.text)))
    for term in terms:
        target = _squash(term.text)
        if len(target) < 3:
            continue
        cjk = language in CJK_LANGUAGES or not term.text.isascii()
        words = _correct_term(words, term, target, cjk)
    return words


def _span_scores(words: list[Word], term: Hotword, target: str, cjk: bool) -> dict[tuple[int, int], float]:
    """Similarity of every short word span (first, last) to the term (101: spelled exactly)."""
    longest = len(target) + 1 if cjk else len(term.text.split()) + 2
    scores: dict[tuple[int, int], float] = {}
    for first in range(len(words)):
        if not _squash(words[first].text):
            continue
        squashed = ""
        spoken = ""
        for last in range(first, min(len(words), first + longest)):
            squashed += _squash(words[last].text)
            spoken += words[last].text
            if len(squashed) > len(target) * 1.5 + 2:
                break
            scores[(first, last)] = 101.0 if squashed == target else similarity(spoken, term.text, cjk)
    return scores


def _correct_term(words: list[Word], term: Hotword, target: str, cjk: bool) -> list[Word]:
    threshold = hotword_threshold(term)
    scores = _span_scores(words, term, target, cjk)
    single_word_term = not cjk and " " not in term.text.strip()

    def qualifies(first: int, last: int, score: float) -> bool:
        if score <= 100 and single_word_term and first == last:
            score -= SINGLE_WORD_MARGIN  # one real-looking word: more likely a true word than a miss
        # both edge words must help: "to Kubernetes" must not beat "Kubernetes"
        trimmed = max(scores.get((first + 1, last), -1.0), scores.get((first, last - 1), -1.0))
        return score >= threshold and trimmed < scores[(first, last)]

    candidates = sorted(
        ((score, first, last) for (first, last), score in scores.items() if qualifies(first, last, score)),
        key=lambda c: (-c[0], c[1]),
    )
    taken: list[tuple[float, int, int]] = []
    for candidate in candidates:
        if all(candidate[2] < other[1] or candidate[1] > other[2] for other in taken):
            taken.append(candidate)
    out: list[Word] = []
    position = 0
    for score, first, last in sorted(taken, key=lambda c: c[1]):
        out.extend(words[position:first])
        if score > 100:  # already spelled right
            out.extend(words[first : last + 1])
        else:
            lead = words[first].text[: len(words[first].text) - len(words[first].text.lstrip())]
            out.append(
                Word(
                    begin_time=words[first].begin_time,
                    end_time=words[last].end_time,
                    text=("" if cjk else lead) + term.text.strip(),
                    punctuation=words[last].punctuation,
                    probability=min(w.probability for w in words[first : last + 1]),
                )
            )
        position = last + 1
    out.extend(words[position:])
    return out


# -- sensitive words --------------------------------------------------------------------------------------
BUILTIN_SENSITIVE_WORDS = (
    "fuck",
    "fucking",
    "fucked",
    "motherfucker",
    "shit",
    "bullshit",
    "bitch",
    "asshole",
    "cunt",
    "他妈的",
    "操你妈",
    "傻逼",
    "王八蛋",
    "狗日的",
    "贱人",
)


def mask_words(words: list[Word], blocked: Sequence[str]) -> list[Word]:
    """Replace each character of a blocked word or phrase with ``*`` (whole words for Latin script)."""
    if not words or not blocked:
        return words
    layout = _layout(words)
    lowered = layout.text.lower()
    masked = list(layout.text)
    for entry in blocked:
        needle = entry.strip().lower()
        if not needle:
            continue
        pattern = re.escape(needle)
        if needle.isascii():
            pattern = rf"(?<![\w']){pattern}(?![\w'])"
        for found in re.finditer(pattern, lowered):
            for pos in range(found.start(), found.end()):
                if not masked[pos].isspace() and layout.in_text[pos]:
                    masked[pos] = "*"
    if masked == list(layout.text):
        return words
    cursor = 0
    for word in words:
        word.text = "".join(masked[cursor : cursor + len(word.text)])
        cursor += len(word.text) + len(word.punctuation)
    return words


# -- punctuation width (zh / ja) --------------------------------------------------------------------------
_TO_FULL = str.maketrans({",": "，", ".": "。", "?": "？", "!": "！", ":": "：", ";": "；"})


def _half_width_alnum(text: str) -> str:
    return "".join(
        chr(ord(ch) - 0xFEE0) if "\uff01" <= ch <= "\uff5e" and chr(ord(ch) - 0xFEE0).isalnum() else ch for ch in text
    )


def normalize_width(words: list[Word]) -> list[Word]:
    """zh/ja: full-width sentence punctuation, half-width letters and digits."""
    for word in words:
        word.text = _half_width_alnum(word.text)
        if word.punctuation:
            word.punctuation = word.punctuation.translate(_TO_FULL)
    return words


# -- entry point -----------------------------------------------------------------------------------------
Step = Callable[[list[Word]], list[Word]]


def _steps(options: RecognitionOptions, language: str | None) -> list[Step]:
    steps: list[Step] = []
    if language in ("zh", "yue"):
        convert = to_simplified if options.simplified_chinese else to_traditional

        def script(words: list[Word]) -> list[Word]:
            for word in words:
                word.text = convert(word.text)
                word.punctuation = convert(word.punctuation)
            return words

        steps.append(script)
    if options.disfluency_removal:
        steps.append(lambda words: remove_fillers(words, language))
    if options.hotwords:
        steps.append(lambda words: correct_hotwords(words, options.hotwords, language))
    if options.itn:
        steps.append(lambda words: inverse_normalize(words, language))
    if options.special_word_filter is not None:
        blocked = [*BUILTIN_SENSITIVE_WORDS, *options.special_word_filter]
        steps.append(lambda words: mask_words(words, blocked))
    if language in ("zh", "yue", "ja"):
        steps.append(normalize_width)
    return steps


def apply(sentences: list[Sentence], options: RecognitionOptions, language: str | None) -> list[Sentence]:
    """Apply the switches in ``options`` to recognized sentences and return the sentences that remain.

    Sentences are updated in place (speaker and language kept); a sentence whose words were all removed
    is dropped.
    """
    steps = _steps(options, language)
    if not steps:
        return sentences
    out: list[Sentence] = []
    for sentence in sentences:
        if not sentence.words:
            out.append(sentence)
            continue
        words = sentence.words
        for step in steps:
            words = step(words)
            if not words:
                break
        if not words:
            continue
        sentence.words = words
        sentence.begin_time = words[0].begin_time
        sentence.end_time = words[-1].end_time
        sentence.text = sentence_text(words, sentence.language or language)
        out.append(sentence)
    return out
