"""What the decoder learns about a file (a plain type the engine's results carry)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class AudioInfo:
    """What the decoder learned about a file."""

    format_name: str
    codec: str
    sample_rate: int
    channels: int
    duration_ms: int | None
