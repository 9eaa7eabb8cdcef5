"""A second look at sentences where a vocabulary term was probably misheard.

With many terms in the decoder prompt, Whisper sometimes still garbles one ("and and and my" for
"anandamide") although the same audio decoded with a prompt naming only that term comes out right. A
sentence is suspect when it lacks a term and holds a low-confidence word span that resembles it. Its
audio is decoded again with a prompt of just the resembling terms, and the new text is kept only if the
acoustic model agrees: both texts are scored by teacher forcing under the original prompt, and the new one
may be less likely by at most ``weight`` x :data:`NATS_PER_WEIGHT` nats. A term invented where nobody said
it (the decoder reading the prompt back, a similar common word) scores tens of nats worse and is rejected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer

from voxgate.engine.guards import clean_segments
from voxgate.engine.postprocess import similarity
from voxgate.engine.prompts import hotword_prompt
from voxgate.engine.sentences import group_sentences, make_words
from voxgate.engine.types import CJK_LANGUAGES, Hotword, Sentence, Word

SAMPLE_RATE = 16_000
FULL_FRAMES = 3000
SUSPECT_SIMILARITY = 50.0  # a word span at least this similar (0-100) to a missing term ...
SUSPECT_CONFIDENCE = 0.5  # ... whose mean word probability is below this makes the sentence suspect
MAX_TERMS = 3  # terms named in the second prompt
MAX_SPAN_WORDS = 4
CLIP_PAD_S = 0.3
MAX_CLIP_S = 28.0
NATS_PER_WEIGHT = 1.0


def suspected_terms(words: Sequence[Word], text: str, terms: Sequence[Hotword], language: str | None) -> list[Hotword]:
    """Terms missing from ``text`` that a low-confidence word span resembles, most similar first."""
    cjk = language in CJK_LANGUAGES
    lowered = text.lower()
    found: list[tuple[float, Hotword]] = []
    for term in terms:
        if not term.text.strip() or term.text.lower() in lowered:
            continue
        best = 0.0
        for first in range(len(words)):
            for last in range(first, min(len(words), first + MAX_SPAN_WORDS)):
                span = words[first : last + 1]
                if float(np.mean([w.probability for w in span])) >= SUSPECT_CONFIDENCE:
                    continue
                spoken = ("" if cjk else " ").join(w.text.strip() for w in span)
                best = max(best, similarity(spoken, term.text, cjk))
        if best >= SUSPECT_SIMILARITY:
            found.append((best, term))
    found.sort(key=lambda item: -item[0])
    return [term for _, term in found[:MAX_TERMS]]


class VocabularyRecheck:
    """Re-decodes suspect sentences of one block of audio (16 kHz float32) with a focused prompt."""

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
        """``sentences`` with suspect ones replaced where the focused decode is acoustically supported."""
        language = self.language
        terms = [h for h in hotwords if not h.lang or not language or h.lang == language]
        out: list[Sentence] = []
        for sentence in sentences:
            suspects = suspected_terms(sentence.words, sentence.text, terms, self.language)
            replacement = self._recheck(sentence, suspects, terms) if suspects else None
            out.extend(replacement if replacement is not None else [sentence])
        return out

    def _recheck(self, sentence: Sentence, suspects: list[Hotword], terms: Sequence[Hotword]) -> list[Sentence] | None:
        start = max(0, int((sentence.begin_time - self.offset_ms) / 1000 * SAMPLE_RATE - CLIP_PAD_S * SAMPLE_RATE))
        end = min(
            self.audio.shape[0],
            int((sentence.end_time - self.offset_ms) / 1000 * SAMPLE_RATE + CLIP_PAD_S * SAMPLE_RATE),
        )
        if end - start < SAMPLE_RATE // 5 or end - start > MAX_CLIP_S * SAMPLE_RATE:
            return None
        clip = np.ascontiguousarray(self.audio[start:end])
        segments, _ = self.model.transcribe(
            clip,
            language=self.language or "en",
            beam_size=self.beam_size,
            word_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=False,
            hotwords=hotword_prompt(suspects, self.language),
        )
        kept = clean_segments(list(segments))
        new_text = "".join(seg.text for seg in kept).strip()
        lowered = new_text.lower()
        gained = [t for t in suspects if t.text.lower() in lowered]
        if not gained:
            return None
        scorer = TextScorer(self.model, clip, self.language, hotword_prompt(list(terms), self.language))
        margin = NATS_PER_WEIGHT * max(min(5, max(1, t.weight)) for t in gained)
        if scorer.logprob(new_text) < scorer.logprob(sentence.text) - margin:
            return None
        raw = [(w.start, w.end, w.word, w.probability) for seg in kept for w in (seg.words or [])]
        words = make_words(raw, self.offset_ms + round(start * 1000 / SAMPLE_RATE))
        regrouped = group_sentences(words, self.language, max_pause_ms=self.max_pause_ms)
        for item in regrouped:
            item.language = sentence.language
        return regrouped or None


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
            start = [self.tokenizer.sot_prev, *self.tokenizer.encode(" " + prompt.strip())[-(448 // 2 - 1) :]]
        self.start = [*start, *self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]

    def logprob(self, text: str) -> float:
        """Sum of the token log-probabilities of ``text`` followed by end-of-text."""
        tokens = [*self.tokenizer.encode(" " + text.strip()), self.tokenizer.eot]
        result = self.model.model.align(self.encoded, self.start, [tokens], [self.frames // 2])[0]
        return sum(math.log(max(p, 1e-12)) for p in result.text_token_probs)
