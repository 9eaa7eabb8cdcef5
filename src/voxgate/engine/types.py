"""Plain result and option types shared by the engine and every protocol adapter.

Times are integer milliseconds of audio time, measured from the start of the file or session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from voxgate.audio.info import AudioInfo as AudioInfo


@dataclass(slots=True)
class Word:
    """One recognized word (or CJK character group) with the punctuation that follows it.

    English words carry their leading space (``" world"``), as the DashScope results do.
    """

    begin_time: int
    end_time: int
    text: str
    punctuation: str = ""
    probability: float = 1.0


@dataclass(slots=True)
class Sentence:
    """A sentence: its words, its full text (words + punctuation), optional speaker."""

    begin_time: int
    end_time: int
    text: str
    words: list[Word] = field(default_factory=list)
    language: str | None = None
    speaker_id: int | None = None
    translation: str | None = None  # English translation, when a real-time session asks for one


@dataclass(slots=True)
class Transcript:
    """Everything recognized on one audio channel."""

    channel_id: int
    sentences: list[Sentence]
    language: str | None
    duration_ms: int
    speech_duration_ms: int

    @property
    def text(self) -> str:
        return join_sentences([s.text for s in self.sentences], self.language)


@dataclass(slots=True)
class FileResult:
    """A recognized file: its audio facts and one transcript per selected channel."""

    info: AudioInfo
    transcripts: list[Transcript]


@dataclass(slots=True)
class Hotword:
    """A vocabulary term and its weight (1-5)."""

    text: str
    weight: int = 4
    lang: str | None = None

    def applies_to(self, language: str | None) -> bool:
        """A term with a ``lang`` is used only for audio in that language (or of unknown language)."""
        return not self.lang or not language or self.lang == language


@dataclass(slots=True)
class RecognitionOptions:
    """Per-request recognition settings; protocol adapters fill it from their own parameter names."""

    language: str | None = None
    language_hints: list[str] = field(default_factory=list)
    hotwords: list[Hotword] = field(default_factory=list)
    context: str | None = None
    channels: list[int] = field(default_factory=lambda: [0])
    itn: bool = False
    disfluency_removal: bool = False
    special_word_filter: list[str] | None = None
    diarization: bool = False
    speaker_count: int | None = None
    max_sentence_silence_ms: int = 800
    simplified_chinese: bool = True
    task: Literal["transcribe", "translate"] = "transcribe"
    """``translate``: Whisper's translate task, English text of speech in any language."""
    translate_finals: bool = False
    """Real-time streams: each final also carries its English translation (``Sentence.translation``)."""

    def text_language(self, spoken: str | None) -> str | None:
        """The language of the produced text: English when translating, else the spoken language."""
        return "en" if self.task == "translate" else spoken


CJK_LANGUAGES = frozenset({"zh", "ja", "yue", "ko"})


def join_sentences(texts: list[str], language: str | None) -> str:
    """Join sentence texts: no separator for CJK, a single space otherwise."""
    if language in CJK_LANGUAGES:
        return "".join(t.strip() for t in texts)
    return " ".join(t.strip() for t in texts if t.strip())
