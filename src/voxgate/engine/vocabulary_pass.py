"""A second look at sentences where a vocabulary term was probably misheard.

With many terms in the decoder prompt, Whisper sometimes still garbles one ("and and and my" for
"anandamide") although the same audio decoded with a prompt naming only that term comes out right.

1. A sentence is suspect when it lacks a term and a low-confidence span of its words (4 letters or more)
   resembles the term. Spans holding a vocabulary term already are left alone.
2. The sentence's audio is decoded again with a prompt naming only the (at most 3) most resembling terms.
3. That decode replaces the sentence when it holds one of those terms and the acoustic model supports it:
   both texts are scored by teacher forcing (the log-probability of the text, CTranslate2 ``align``) under
   the original prompt, and the new one may be at most ``weight`` x :data:`NATS_PER_WEIGHT` nats less
   likely. A term invented where nobody said it (the decoder reading the prompt back, a similar common
   word) scores far worse and is rejected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer

from voxgate.engine.guards import clean_segments
from voxgate.engine.postprocess import similarity
from voxgate.engine.prompts import hotword_prompt
from voxgate.engine.sentences import group_sentences, make_words, sentence_text
from voxgate.engine.types import CJK_LANGUAGES, Hotword, RecognitionOptions, Sentence, Word

SAMPLE_RATE = 16_000
FULL_FRAMES = 3000
MAX_PROMPT_TOKENS = 223
SUSPECT_RESEMBLANCE = 40.0  # a word span at least this similar (0-100) to a missing term ...
SUSPECT_CONFIDENCE = 0.5  # ... whose mean word probability is below this makes the sentence suspect
MAX_SPAN_WORDS = 4
MIN_SPAN_LETTERS = 4
FOCUSED_TERMS = 3  # most resembling terms named in the second prompt
CLIP_PAD_S = 0.3
MAX_CLIP_S = 28.0
NATS_PER_WEIGHT = 1.0


def suspects_in(words: Sequence[Word], text: str, terms: Sequence[Hotword], language: str | None) -> list[Hotword]:
    """Terms missing from ``text`` that a low-confidence word span resembles, most resembling first."""
    cjk = language in CJK_LANGUAGES
    lowered = text.lower()
    known = {t.text.strip().lower() for t in terms}
    found: list[tuple[float, Hotword]] = []
    for term in terms:
        if not term.text.strip() or term.text.lower() in lowered:
            continue
        best = 0.0
        for first in range(len(words)):
            for last in range(first, min(len(words), first + MAX_SPAN_WORDS)):
                span = words[first : last + 1]
                if any(w.text.strip().lower() in known for w in span):
                    break
                if float(np.mean([w.probability for w in span])) >= SUSPECT_CONFIDENCE:
                    continue
                spoken = ("" if cjk else " ").join(w.text.strip() for w in span)
                if sum(ch.isalnum() for ch in spoken) < (2 if cjk else MIN_SPAN_LETTERS):
                    continue
                best = max(best, similarity(spoken, term.text, cjk))
        if best >= SUSPECT_RESEMBLANCE:
            found.append((best, term))
    found.sort(key=lambda item: -item[0])
    return [term for _, term in found]


def second_look(
    model: WhisperModel,
    audio: np.ndarray,
    offset_ms: int,
    sentences: list[Sentence],
    options: RecognitionOptions,
    language: str | None,
    beam_size: int,
) -> list[Sentence]:
    """``sentences`` decoded from ``audio`` (which starts at ``offset_ms``), with the vocabulary second look
    applied when the request has a vocabulary."""
    if not options.hotwords:
        return sentences
    recheck = VocabularyRecheck(model, audio, offset_ms, language, beam_size, options.max_sentence_silence_ms)
    return recheck.apply(sentences, options.hotwords)


class VocabularyRecheck:
    """Second look at the suspect sentences of one block of audio (16 kHz float32 starting at ``offset_ms``)."""

    def __init__(
        self,
        model: WhisperModel,
        audio: np.ndarray,
        offset_ms: int,
        language: str | None,
        beam_size: int,
        max_pause_ms: int,
    ) -> None:
        self.model = model
        self.audio = audio
        self.offset_ms = offset_ms
        self.language = language
        self.beam_size = beam_size
        self.max_pause_ms = max_pause_ms

    def apply(self, sentences: list[Sentence], hotwords: Sequence[Hotword]) -> list[Sentence]:
        """``sentences`` with suspect ones replaced where the acoustic model supports a term."""
        terms = [h for h in hotwords if h.applies_to(self.language)]
        out: list[Sentence] = []
        for sentence in sentences:
            suspects = suspects_in(sentence.words, sentence.text, terms, self.language)
            replacement = self._recheck(sentence, suspects, terms) if suspects else None
            out.extend(replacement if replacement is not None else [sentence])
        return out

    def _recheck(self, sentence: Sentence, suspects: list[Hotword], terms: list[Hotword]) -> list[Sentence] | None:
        start = int((sentence.begin_time - self.offset_ms) / 1000 * SAMPLE_RATE - CLIP_PAD_S * SAMPLE_RATE)
        end = int((sentence.end_time - self.offset_ms) / 1000 * SAMPLE_RATE + CLIP_PAD_S * SAMPLE_RATE)
        start, end = max(0, start), min(self.audio.shape[0], end)
        if end - start < SAMPLE_RATE // 5 or end - start > MAX_CLIP_S * SAMPLE_RATE:
            return None
        clip = np.ascontiguousarray(self.audio[start:end])
        focus = suspects[:FOCUSED_TERMS]
        words = self._focused_decode(clip, focus, self.offset_ms + round(start * 1000 / SAMPLE_RATE))
        if words is None:
            return None
        text = sentence_text(words, self.language)
        weight = max((min(5, max(1, t.weight)) for t in focus if t.text.lower() in text.lower()), default=0)
        if not weight:
            return None
        scorer = TextScorer(self.model, clip, self.language, hotword_prompt(terms, self.language))
        if scorer.logprob(text) < scorer.logprob(sentence.text) - NATS_PER_WEIGHT * weight:
            return None
        regrouped = group_sentences(words, self.language, max_pause_ms=self.max_pause_ms)
        return [replace(item, language=sentence.language, speaker_id=sentence.speaker_id) for item in regrouped] or None

    def _focused_decode(self, clip: np.ndarray, focus: list[Hotword], clip_offset_ms: int) -> list[Word] | None:
        """Words of ``clip`` decoded with a prompt naming only ``focus``, or None when none of them is heard."""
        segments, _ = self.model.transcribe(
            clip,
            language=self.language or "en",
            beam_size=self.beam_size,
            word_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
            temperature=0.0,
            hotwords=hotword_prompt(focus, self.language),
        )
        kept = clean_segments(list(segments))
        heard = "".join(seg.text for seg in kept).lower()
        if not any(term.text.lower() in heard for term in focus):
            return None
        raw = [(w.start, w.end, w.word, w.probability) for seg in kept for w in (seg.words or [])]
        return make_words(raw, clip_offset_ms) or None


class TextScorer:
    """Log-probability of a transcript of one clip under a prompt, by teacher forcing (CTranslate2 align)."""

    def __init__(self, model: WhisperModel, clip: np.ndarray, language: str | None, prompt: str | None) -> None:
        self.model = model
        features = model.feature_extractor(clip)
        self.frames = min(FULL_FRAMES, features.shape[-1])
        padded = np.zeros((features.shape[0], FULL_FRAMES), dtype=np.float32)
        padded[:, : self.frames] = features[:, : self.frames]
        self.encoded = model.encode(padded)
        multilingual = model.model.is_multilingual
        self.tokenizer = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe", language=language or "en")
        start: list[int] = []
        if prompt:
            start = [self.tokenizer.sot_prev, *self.tokenizer.encode(" " + prompt.strip())[-MAX_PROMPT_TOKENS:]]
        self.start = [*start, *self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]

    def logprob(self, text: str) -> float:
        """Sum of the token log-probabilities of ``text`` followed by end-of-text."""
        tokens = [*self.tokenizer.encode(" " + text.strip()), self.tokenizer.eot]
        result = self.model.model.align(self.encoded, self.start, [tokens], [self.frames // 2])[0]
        return sum(math.log(max(p, 1e-12)) for p in result.text_token_probs)
