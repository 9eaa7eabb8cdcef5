"""Cheap interim hypotheses for streaming, and the Whisper-backed stream engine.

Whisper's encoder normally sees a padded 30 s window, which costs the same however short the speech is.
For interim results the encoder gets only the audio so far plus about one second of silence (CTranslate2
accepts fewer than 3000 mel frames), which is several times cheaper. Short inputs make greedy decoding
loop, so the decode is guarded: a token cap from the audio length, repetition detection (the loop is cut
off), and a second decode of the same encoding with repetition penalties when the loop left nothing new.

Finals of VAD segments shorter than 28 s also use a short window (with word timestamps from cross-attention
alignment) when every guard passes: sure language, no loop, no token cap, confident tokens, normal
compression, and words that reach the end of the speech. Otherwise they go to the shared
:class:`~voxgate.engine.recognizer.Recognizer` (full padded window, the accurate path).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, replace

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, merge_punctuations

from voxgate.engine import postprocess
from voxgate.engine.catalog import EngineProfile
from voxgate.engine.diarize import OnlineSpeakerLabeler
from voxgate.engine.guards import repeated_span
from voxgate.engine.language import to_whisper_code
from voxgate.engine.prompts import context_prompt, hotword_prompt
from voxgate.engine.recognizer import Recognizer
from voxgate.engine.scheduler import WorkClass
from voxgate.engine.sentences import group_sentences, make_words
from voxgate.engine.types import RecognitionOptions, Sentence
from voxgate.engine.vocabulary_pass import second_look

log = logging.getLogger("voxgate.stream")

SAMPLE_RATE = 16_000
PAD_SECONDS = 1.0
FULL_FRAMES = 3000
TOKENS_PER_SECOND = 5.0
MIN_TOKENS = 6
NO_SPEECH = 0.6
LOW_LOGPROB = -1.0
DETECT_MIN_SAMPLES = SAMPLE_RATE  # interims wait for 1 s of audio before guessing the language
DETECT_MIN_PROB = 0.6
FINAL_TOKENS_PER_SECOND = 8.0
FINAL_MIN_LOGPROB = -0.8
FINAL_MAX_COMPRESSION = 2.2
FINAL_MISSING_TAIL_S = 1.0  # the last word must end this close to where the VAD heard speech end
PREVIOUS_CHARS = 200
REMEMBERED = 8  # decoded pieces kept for prompts (finals may complete out of order)
FINAL_EXTRA_TAIL_S = 0.5  # ... and must not start this long after it (text invented in the padding)
FINAL_LATE_START_S = 1.5  # the first word must start this close to the segment start (300 ms pre-roll)
FINAL_GAP_MARGIN_S = 1.2  # alignment slack on top of the longest pause a sentence may hold
PREPEND = "\"'“¿([{-"
APPEND = "\"'.。,，!！?？:：”)]}、"


@dataclass(slots=True)
class Hypothesis:
    """An interim decode: its full text (prefix included), detected language and guard outcomes."""

    text: str
    language: str | None
    looped: bool = False
    capped: bool = False
    fallback: bool = False


def _norm(word: str) -> str:
    return word.strip().lower().strip(".,!?;:。，！？；：\"'")


def repeated_phrase(words: list[str], size: int = 4) -> int | None:
    """Index where the decoder started re-reading earlier words into the padding: a phrase of ``size`` words
    occurs again and the text from there on repeats the earlier text to its very end (its last word may be cut
    short: "... foolishness. it was the age of foolish"). None otherwise: natural parallel phrasing ("it was the
    age of wisdom, it was the age of foolishness") continues differently. Shorter texts are checked with smaller
    phrases."""
    keys = [_norm(w) for w in words]
    size = min(size, max(3, len(keys) // 3))
    seen: dict[tuple[str, ...], list[int]] = {}
    for start in range(0, len(keys) - size + 1):
        gram = tuple(keys[start : start + size])
        for first in seen.get(gram, []):
            if start < first + size:
                continue
            tail, earlier = keys[start:], keys[first : first + len(keys) - start]
            if tail[:-1] == earlier[:-1] and earlier[-1].startswith(tail[-1]):
                return start
        seen.setdefault(gram, []).append(start)
    return None


class PartialDecoder:
    """Short-window greedy decoding with guards, for one Whisper model."""

    def __init__(self, model: WhisperModel) -> None:
        self.model = model
        self.multilingual = bool(model.model.is_multilingual)

    def encode(self, audio: np.ndarray) -> ctranslate2.StorageView:
        """Encoder output for ``audio`` plus one second of padding (a short window, not a padded 30 s)."""
        padded = np.concatenate([audio, np.zeros(int(PAD_SECONDS * SAMPLE_RATE), dtype=np.float32)])
        features = self.model.feature_extractor(padded)
        frames = min(FULL_FRAMES, max(100, features.shape[-1] - 1))
        window = np.ascontiguousarray(features[None, :, :frames], dtype=np.float32)
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(window), to_cpu=False)
        return encoded

    def decode(
        self,
        audio: np.ndarray,
        *,
        language: str | None,
        prefix: str = "",
        prompt: str | None = None,
        hints: list[str] | None = None,
    ) -> Hypothesis:
        """Decode ``audio`` (16 kHz float32, < 29 s) continuing the confirmed ``prefix``."""
        encoded = self.encode(audio)
        hyp = self._run(encoded, audio.shape[0], language, prefix, prompt, hints, penalize=False)
        if hyp.looped and len(hyp.text.split()) <= len(prefix.split()):
            # the loop left nothing new: decode the same encoding again with repetition penalties
            retry = self._run(encoded, audio.shape[0], hyp.language, prefix, prompt, hints, penalize=True)
            if not retry.looped:
                retry.fallback = True
                return retry
        return hyp

    def _run(
        self,
        encoded: ctranslate2.StorageView,
        samples: int,
        language: str | None,
        prefix: str,
        prompt: str | None,
        hints: list[str] | None,
        *,
        penalize: bool,
    ) -> Hypothesis:
        if not self.multilingual:
            language = "en"
        elif language is None:
            language = self._detect(encoded, hints, samples)
            if language is None:  # too little speech to tell the language: no interim yet
                return Hypothesis(prefix.strip(), None)
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe", language=language or "en")
        tokens = start_tokens(tokenizer, prompt)
        prefix_tokens = tokenizer.encode(" " + prefix.strip()) if prefix.strip() else []
        tokens += prefix_tokens
        cap = int(samples / SAMPLE_RATE * TOKENS_PER_SECOND) + MIN_TOKENS
        result = greedy(self.model, encoded, tokens, cap, penalize=penalize)
        ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        new = ids[len(prefix_tokens) :] if ids[: len(prefix_tokens)] == prefix_tokens else ids
        capped = len(new) >= cap
        avg_logprob = result.scores[0] / (len(new) + 1) if new else 0.0
        if not new or result.no_speech_prob > NO_SPEECH or avg_logprob < LOW_LOGPROB:
            return Hypothesis(prefix.strip(), language, capped=capped)  # nothing trustworthy to add
        text = tokenizer.decode(ids).strip()
        words = text.split()
        cut = repeated_span([_norm(w) for w in words], min_repeats=2)
        again = repeated_phrase(words)
        if again is not None and (cut is None or again < cut):
            cut = again
        looped = cut is not None
        if cut is not None:
            words = words[:cut]
        elif capped and len(words) > 1:
            words = words[:-1]  # the cap may have cut a word (or a loop) short
        confirmed = prefix.strip().split()
        if len(words) < len(confirmed):
            words = confirmed
        return Hypothesis(" ".join(words), language, looped=looped, capped=capped)

    def decode_final(
        self,
        audio: np.ndarray,
        *,
        language: str | None,
        prompt: str | None,
        hints: list[str] | None = None,
        speech_end_s: float | None = None,
        encoded: ctranslate2.StorageView | None = None,
        max_gap_s: float = 2.0,
    ) -> tuple[list[tuple[float, float, str, float]], str] | None:
        """Words with times (and the language) for a whole VAD segment on a short window, or None when a
        guard trips: unsure language, loop, token cap, low confidence, high compression, or words ending
        well before the speech does, or a stretch of speech skipped (no word for more than ``max_gap_s``, the
        longest pause a sentence can hold, or at the start). ``encoded``: the window from :meth:`encode`."""
        if encoded is None:
            encoded = self.encode(audio)
        if not self.multilingual:
            language = "en"
        elif language is None:
            language = self._detect(encoded, hints, audio.shape[0])
            if language is None:
                return None
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe", language=language)
        tokens = start_tokens(tokenizer, prompt)
        cap = int(audio.shape[0] / SAMPLE_RATE * FINAL_TOKENS_PER_SECOND) + MIN_TOKENS
        result = greedy(self.model, encoded, tokens, cap)
        ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        if not ids:
            return ([], language) if result.no_speech_prob > NO_SPEECH else None
        avg_logprob = result.scores[0] / (len(ids) + 1)
        if result.no_speech_prob > NO_SPEECH and avg_logprob < LOW_LOGPROB:
            return [], language
        text = tokenizer.decode(ids)
        split = text.split()
        loop = [c for c in (repeated_span([_norm(w) for w in split]), repeated_phrase(split)) if c is not None]
        if loop:
            # The decoder re-read the audio into the padding: keep the text before the repeat; the checks
            # below (words must reach the end of the speech) decide whether the rest is trustworthy.
            split = split[: min(loop)]
            ids = tokenizer.encode(" " + " ".join(split))
            text = " ".join(split)
        elif len(ids) >= cap:
            return None
        if not split or avg_logprob < FINAL_MIN_LOGPROB or get_compression_ratio(text) > FINAL_MAX_COMPRESSION:
            return None
        content_frames = audio.shape[0] // self.model.feature_extractor.hop_length
        alignment = self.model.find_alignment(tokenizer, [ids], encoded, content_frames)[0]
        merge_punctuations(alignment, PREPEND, APPEND)
        words = [
            (float(w["start"]), float(w["end"]), str(w["word"]), float(w["probability"]))
            for w in alignment
            if w["word"]
        ]
        if not words:
            return None
        if speech_end_s is not None and (
            words[-1][1] < speech_end_s - FINAL_MISSING_TAIL_S or words[-1][0] > speech_end_s + FINAL_EXTRA_TAIL_S
        ):
            return None
        if skipped_speech(words, max_gap_s):
            return None
        return words, language

    def translate(self, encoded: ctranslate2.StorageView, language: str, samples: int) -> str | None:
        """English text of the encoded speech (Whisper's translate task, greedy, loops cut); None if empty."""
        if not self.multilingual:
            return None
        tokenizer = Tokenizer(self.model.hf_tokenizer, True, task="translate", language=language)
        cap = int(samples / SAMPLE_RATE * FINAL_TOKENS_PER_SECOND) + MIN_TOKENS
        result = greedy(self.model, encoded, start_tokens(tokenizer, None), cap)
        words = tokenizer.decode([t for t in result.sequences_ids[0] if t < tokenizer.eot]).split()
        cuts = [c for c in (repeated_span([_norm(w) for w in words]), repeated_phrase(words)) if c is not None]
        text = " ".join(words[: min(cuts)] if cuts else words)
        return text or None

    def _detect(self, encoded: ctranslate2.StorageView, hints: list[str] | None, samples: int) -> str | None:
        """The language of an interim, or None while it is uncertain (short or ambiguous speech)."""
        allowed = [to_whisper_code(h) for h in (hints or []) if h]
        if len(allowed) == 1:
            return allowed[0]
        if samples < DETECT_MIN_SAMPLES:
            return None
        ranked = self.model.model.detect_language(encoded)[0]
        for token, prob in ranked:
            code = token[2:-2]
            if not allowed or code in allowed:
                return code if prob >= DETECT_MIN_PROB else None
        return None


def skipped_speech(words: list[tuple[float, float, str, float]], max_gap_s: float) -> bool:
    """True when the decoder jumped over speech: the first word starts late, or two words lie further apart
    than a pause inside one sentence can be (the VAD would have ended the sentence there)."""
    if not words or words[0][0] > FINAL_LATE_START_S:
        return True
    return any(b[0] - a[1] > max_gap_s for a, b in itertools.pairwise(words))


def greedy(
    model: WhisperModel, encoded: ctranslate2.StorageView, tokens: list[int], cap: int, *, penalize: bool = False
) -> ctranslate2.models.WhisperGenerationResult:
    """One greedy decode of ``encoded`` after ``tokens``, at most ``cap`` new tokens; ``penalize`` damps loops."""
    return model.model.generate(
        encoded,
        [tokens],
        max_length=min(448, len(tokens) + cap),
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        beam_size=1,
        repetition_penalty=1.3 if penalize else 1.0,
        no_repeat_ngram_size=3 if penalize else 0,
    )[0]


def start_tokens(tokenizer: Tokenizer, prompt: str | None) -> list[int]:
    """Decoder start: the last 100 prompt tokens (if any), then the start-of-transcript sequence, no timestamps."""
    tokens: list[int] = []
    if prompt:
        tokens = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-100:]]
    return [*tokens, *tokenizer.sot_sequence, tokenizer.no_timestamps]


class WhisperStreamEngine:
    """What one real-time stream needs from the engine: cheap partials and accurate finals.

    Partials use ``partial_model`` (``whisper-tiny.en`` for English sessions when available) through
    :class:`PartialDecoder`; finals use the profile's model on a short window, with a second try without the
    previous sentence as prompt, and the full-window :meth:`Recognizer.transcribe_clip` only when both fail.
    ``options`` is the one copy of the session's options: context updates reach every path.
    """

    def __init__(
        self,
        recognizer: Recognizer,
        profile: EngineProfile,
        options: RecognitionOptions,
        *,
        partial_model: str,
        fast_finals: bool = True,
    ) -> None:
        self.recognizer = recognizer
        self.profile = profile
        self.options = options
        self.partial_model = partial_model
        self.fast_finals = fast_finals
        self._decoder = PartialDecoder(recognizer.model(partial_model))
        final_model = recognizer.model(recognizer.engine_model(profile, options))
        self._final_decoder = PartialDecoder(final_model)
        self.stats = {"fast_finals": 0, "retried_finals": 0, "full_finals": 0}
        # decoded text by where it ends (ms), newest last: the prompt of a later piece, as batch decoding has
        self._decoded: list[tuple[int, str]] = []
        # Live speaker labels: one incremental clusterer per session, so ids stay stable across sentences.
        self._speakers = OnlineSpeakerLabeler(max_speakers=options.speaker_count) if options.diarization else None

    def update_context(self, text: str | None) -> None:
        """New context text for every later partial and final (fast and full-window alike)."""
        self.options.context = text

    def use_partial_model(self, name: str) -> None:
        """Switch interim decoding to another model (e.g. the English one once the language is known)."""
        if name != self.partial_model:
            self._decoder = PartialDecoder(self.recognizer.model(name))
            self.partial_model = name

    def partial(self, audio: np.ndarray, prefix: str, language: str | None) -> Hypothesis:
        prompt = context_prompt(self.options.context) or hotword_prompt(self.options.hotwords, language)
        return self._decoder.decode(
            audio, language=language, prefix=prefix, prompt=prompt, hints=self.options.language_hints
        )

    def final(
        self, audio: np.ndarray, offset_ms: int, language: str | None, speech_end_s: float | None = None
    ) -> tuple[list[Sentence], str | None]:
        """A closed sentence: short-window decode when its guards pass, else the accurate full-window path."""
        if self.fast_finals and audio.shape[0] < (FULL_FRAMES // 100 - 2) * SAMPLE_RATE:
            decoded = self._short_window_final(audio, offset_ms, language, speech_end_s)
            if decoded is not None:
                words, language = decoded
                built = make_words(words, offset_ms)
                sentences = group_sentences(built, language, max_pause_ms=self.options.max_sentence_silence_ms)
                sentences = second_look(
                    self._final_decoder.model,
                    audio,
                    offset_ms,
                    sentences,
                    self.options,
                    language,
                    self.profile.beam_size,
                )
                sentences = postprocess.apply(sentences, self.options, language)
                return self._translated(self._remember(self._label(sentences, audio)), audio, language), language
        self.stats["full_finals"] += 1
        log.debug("final of %.1f s on the full window (short-window guards did not pass)", audio.shape[0] / SAMPLE_RATE)
        sentences, language = self.recognizer.transcribe_clip(
            audio,
            replace(self.options, diarization=False),
            self.profile,
            offset_ms=offset_ms,
            language=language,
            work=WorkClass.FINAL,
        )
        return self._translated(self._remember(self._label(sentences, audio)), audio, language), language

    def _translated(self, sentences: list[Sentence], audio: np.ndarray, language: str | None) -> list[Sentence]:
        """With ``translate_finals``, the utterance's English translation on its last sentence (English speech
        is its own translation)."""
        if not self.options.translate_finals or not sentences:
            return sentences
        if language in (None, "en"):
            text: str | None = " ".join(s.text for s in sentences)
        else:
            text = self._final_decoder.translate(self._final_decoder.encode(audio), language, audio.shape[0])
        sentences[-1].translation = text
        return sentences

    def _short_window_final(
        self, audio: np.ndarray, offset_ms: int, language: str | None, speech_end_s: float | None
    ) -> tuple[list[tuple[float, float, str, float]], str] | None:
        """Decode once with the text before the audio as prompt; if a guard trips, once more without it (the
        previous text can pull the decoder off the audio). The encoder runs once for both."""
        own = context_prompt(self.options.context) or hotword_prompt(self.options.hotwords, language)
        prompts = [own or self._text_before(offset_ms)]
        if prompts[0] != own:
            prompts.append(own)
        encoded = self._final_decoder.encode(audio)
        for attempt, prompt in enumerate(prompts):
            decoded = self._final_decoder.decode_final(
                audio,
                language=language,
                prompt=prompt,
                hints=self.options.language_hints,
                speech_end_s=speech_end_s,
                encoded=encoded,
                max_gap_s=self.options.max_sentence_silence_ms / 1000 + FINAL_GAP_MARGIN_S,
            )
            if decoded is not None:
                self.stats["retried_finals" if attempt else "fast_finals"] += 1
                return decoded
        return None

    def _label(self, sentences: list[Sentence], audio: np.ndarray) -> list[Sentence]:
        if self._speakers is None or not sentences:
            return sentences
        speaker = self._speakers.assign(audio)  # one utterance, one voice: embed all of its audio
        for sentence in sentences:
            sentence.speaker_id = speaker
        return sentences

    def _remember(self, sentences: list[Sentence]) -> list[Sentence]:
        """Keep the decoded text, by where it ends, as the prompt of later pieces of audio."""
        text = " ".join(s.text for s in sentences).strip()
        if text:
            self._decoded.append((sentences[-1].end_time, text))
            self._decoded = sorted(self._decoded)[-REMEMBERED:]
        return sentences

    def _text_before(self, offset_ms: int) -> str | None:
        """The latest decoded text that ends before ``offset_ms``. Never text of the audio being decoded: a
        speculative final given up when the speaker went on, or a piece decoded twice, covers the same audio,
        and as a prompt it makes the decoder skip those words as already said."""
        for end, text in reversed(self._decoded):
            if end <= offset_ms:
                return text[-PREVIOUS_CHARS:]
        return None
