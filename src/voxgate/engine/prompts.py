"""Decoder prompts built from request options: vocabulary terms and free context text."""

from __future__ import annotations

from voxgate.engine.types import Hotword


def hotword_prompt(hotwords: list[Hotword], language: str | None, max_chars: int = 200) -> str | None:
    """Vocabulary terms as a decoder prompt: heaviest first, language-filtered, length-capped."""
    terms = [h for h in hotwords if h.applies_to(language)]
    terms.sort(key=lambda h: -h.weight)
    out: list[str] = []
    used = 0
    for term in terms:
        if used + len(term.text) + 2 > max_chars:
            break
        out.append(term.text)
        used += len(term.text) + 2
    if not out:
        return None
    # Phrased as a sentence about the recording, the list biases the decoder without being read as text to
    # continue (bench/quality.py: same recall as a bare list, less collateral error on unrelated speech).
    if language in ("zh", "ja", "yue"):
        return "术语：" + "、".join(out) + "。"
    listed = out[0] if len(out) == 1 else ", ".join(out[:-1]) + " and " + out[-1]
    return f"In this recording we talk about {listed}."


def context_prompt(context: str | None, max_chars: int = 400) -> str | None:
    """Free context text as an initial prompt; Whisper reads only the last ~220 tokens, keep the end."""
    if not context or not context.strip():
        return None
    text = " ".join(context.split())
    return text[-max_chars:]
