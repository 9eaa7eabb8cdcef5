"""Cheap interim hypotheses for streaming, and the Whisper-backed stream engine.

Whisper's encoder normally sees a padded 30 s window, which costs the same however short the speech is.
For interim results the encoder gets only the audio so far plus about one second of silence (CTranslate2
accepts fewer than 3000 mel frames), which is several times cheaper. Short inputs make greedy decoding
loop, so the decode is guarded: a token cap from the audio length, repetition detection (the loop is cut
off), and a fall-back to the full window when the short decode looped. Finals never use this path: they
are decoded by the shared :class:`~voxgate.engine.recognizer.Recognizer` with the accurate settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer

from voxgate.engine.catalog import EngineProfile
from voxgate.engine.guards import repeated_span
from voxgate.engine.language import to_whisper_code
from voxgate.engine.recognizer import Recognizer, context_prompt, hotword_prompt
from voxgate.engine.types import RecognitionOptions, Sentence

SAMPLE_RATE = 16_000
PAD_SECONDS = 1.0
FULL_FRAMES = 3000
TOKENS_PER_SECOND = 5.0
MIN_TOKENS = 6
NO_SPEECH = 0.6
LOW_LOGPROB = -1.0
DETECT_MIN_SAMPLES = SAMPLE_RATE  # interims wait for 1 s of audio before guessing the language
DETECT_MIN_PROB = 0.6


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


class PartialDecoder:
    """Short-window greedy decoding with guards, for one Whisper model."""

    def __init__(self, model: WhisperModel) -> None:
        self.model = model
        self.multilingual = bool(model.model.is_multilingual)

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
        padded = np.concatenate([audio, np.zeros(int(PAD_SECONDS * SAMPLE_RATE), dtype=np.float32)])
        features = self.model.feature_extractor(padded)
        frames = min(FULL_FRAMES, max(100, features.shape[-1] - 1))
        hyp = self._run(features, frames, audio.shape[0], language, prefix, prompt, hints)
        if hyp.looped and frames < FULL_FRAMES:
            full = np.zeros((features.shape[0], FULL_FRAMES), dtype=features.dtype)
            usable = min(FULL_FRAMES, features.shape[-1])
            full[:, :usable] = features[:, :usable]
            retry = self._run(full, FULL_FRAMES, audio.shape[0], language, prefix, prompt, hints)
            if not retry.looped:
                retry.fallback = True
                return retry
        return hyp

    def _run(
        self,
        features: np.ndarray,
        frames: int,
        samples: int,
        language: str | None,
        prefix: str,
        prompt: str | None,
        hints: list[str] | None,
    ) -> Hypothesis:
        window = np.ascontiguousarray(features[None, :, :frames], dtype=np.float32)
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(window), to_cpu=False)
        if not self.multilingual:
            language = "en"
        elif language is None:
            language = self._detect(encoded, hints, samples)
            if language is None:  # too little speech to tell the language: no interim yet
                return Hypothesis(prefix.strip(), None)
        tokenizer = Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe", language=language or "en")
        tokens: list[int] = []
        if prompt:
            tokens = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-100:]]
        tokens += [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        prefix_tokens = tokenizer.encode(" " + prefix.strip()) if prefix.strip() else []
        tokens += prefix_tokens
        cap = int(samples / SAMPLE_RATE * TOKENS_PER_SECOND) + MIN_TOKENS
        result = self.model.model.generate(
            encoded,
            [tokens],
            max_length=min(448, len(tokens) + cap),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            beam_size=1,
        )[0]
        ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        new = ids[len(prefix_tokens) :] if ids[: len(prefix_tokens)] == prefix_tokens else ids
        capped = len(new) >= cap
        avg_logprob = result.scores[0] / (len(new) + 1) if new else 0.0
        if not new or (result.no_speech_prob > NO_SPEECH and avg_logprob < LOW_LOGPROB):
            return Hypothesis(prefix.strip(), language, capped=capped)
        text = tokenizer.decode(ids).strip()
        words = text.split()
        cut = repeated_span([_norm(w) for w in words], min_repeats=2)
        looped = cut is not None
        if cut is not None:
            words = words[:cut]
        elif capped and len(words) > 1:
            words = words[:-1]  # the cap may have cut a word (or a loop) short
        confirmed = prefix.strip().split()
        if len(words) < len(confirmed):
            words = confirmed
        return Hypothesis(" ".join(words), language, looped=looped, capped=capped)

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


class WhisperStreamEngine:
    """What one real-time stream needs from the engine: cheap partials and accurate finals.

    Partials use ``partial_model`` (``whisper-tiny.en`` for English sessions when available) through
    :class:`PartialDecoder`; finals use the profile's model through :meth:`Recognizer.transcribe_clip`.
    """

    def __init__(
        self,
        recognizer: Recognizer,
        profile: EngineProfile,
        options: RecognitionOptions,
        *,
        partial_model: str,
    ) -> None:
        self.recognizer = recognizer
        self.profile = profile
        self.options = options
        self.partial_model = partial_model
        self._decoder = PartialDecoder(recognizer.model(partial_model))
        recognizer.model(recognizer.engine_model(profile, options))

    def partial(self, audio: np.ndarray, prefix: str, language: str | None) -> Hypothesis:
        prompt = context_prompt(self.options.context) or hotword_prompt(self.options.hotwords, language)
        return self._decoder.decode(
            audio, language=language, prefix=prefix, prompt=prompt, hints=self.options.language_hints
        )

    def final(self, audio: np.ndarray, offset_ms: int, language: str | None) -> tuple[list[Sentence], str | None]:
        return self.recognizer.transcribe_clip(
            audio, self.options, self.profile, offset_ms=offset_ms, language=language
        )
