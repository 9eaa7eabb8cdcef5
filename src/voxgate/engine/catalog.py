"""Public model names (as the DashScope APIs and SDKs use them) mapped to local engine profiles."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from voxgate.errors import ModelNotFound


@dataclass(frozen=True, slots=True)
class EngineProfile:
    """How one public model name is served locally.

    ``model`` is the bundled engine model for finals; ``partial_model`` (if set) is used for cheap
    interim hypotheses of English sessions. ``family`` picks the wire dialect (result shapes, id bases).
    """

    name: str
    family: str  # "fun-asr" | "paraformer" | "qwen-asr" | "qwen-omni" | "qwen-audio" | "fun-asr-flash"
    mode: str  # "file" | "realtime" | "sync"
    model: str = "whisper-base"
    partial_model: str | None = None
    beam_size: int = 3
    sample_rates: tuple[int, ...] | None = None  # None = any


_BASE_PROFILES: tuple[EngineProfile, ...] = (
    # file transcription
    EngineProfile("fun-asr", "fun-asr", "file"),
    EngineProfile("fun-asr-mtl", "fun-asr", "file"),
    EngineProfile("paraformer-v2", "paraformer", "file"),
    EngineProfile("paraformer-v1", "paraformer", "file"),
    EngineProfile("paraformer-8k-v2", "paraformer", "file"),
    EngineProfile("paraformer-8k-v1", "paraformer", "file"),
    EngineProfile("paraformer-mtl-v1", "paraformer", "file"),
    EngineProfile("sensevoice-v1", "paraformer", "file"),
    EngineProfile("qwen3-asr-flash-filetrans", "qwen-asr", "file"),
    EngineProfile("qwen-audio-3.1-asr-flash-filetrans", "qwen-audio", "file"),
    EngineProfile("qwen-audio-3.0-asr-flash-filetrans", "qwen-audio", "file"),
    # real-time, run-task protocol
    EngineProfile("fun-asr-realtime", "fun-asr", "realtime", sample_rates=(16000,)),
    EngineProfile("fun-asr-flash-8k-realtime", "fun-asr", "realtime", sample_rates=(8000,)),
    EngineProfile("paraformer-realtime-v2", "paraformer", "realtime"),
    EngineProfile("paraformer-realtime-v1", "paraformer", "realtime", sample_rates=(16000,)),
    EngineProfile("paraformer-realtime-8k-v2", "paraformer", "realtime", sample_rates=(8000,)),
    EngineProfile("paraformer-realtime-8k-v1", "paraformer", "realtime", sample_rates=(8000,)),
    EngineProfile("qwen-audio-3.1-asr-flash-streaming", "qwen-audio", "realtime"),
    EngineProfile("qwen-audio-3.0-asr-flash-streaming", "qwen-audio", "realtime"),
    # real-time, session protocol
    EngineProfile("qwen3-asr-flash-realtime", "qwen-asr", "realtime"),
    EngineProfile("qwen3-omni-flash-realtime", "qwen-omni", "realtime"),
    # synchronous
    EngineProfile("qwen3-asr-flash", "qwen-asr", "sync"),
    EngineProfile("qwen3-omni-flash", "qwen-omni", "sync"),
    EngineProfile("fun-asr-flash", "fun-asr-flash", "sync"),
    EngineProfile("qwen-audio-3.1-asr-flash", "qwen-audio", "sync"),
    EngineProfile("qwen-audio-3.0-asr-flash", "qwen-audio", "sync"),
)

# Dated snapshots: "<base>-YYYY-MM-DD" resolves to <base>.
_SNAPSHOT = re.compile(r"^(?P<base>.+?)-(?P<date>\d{4}-\d{2}-\d{2})$")

# Snapshot names documented for each base model (others of the same shape are accepted too).
KNOWN_SNAPSHOTS: dict[str, tuple[str, ...]] = {
    "fun-asr": ("2025-11-07", "2025-08-25"),
    "fun-asr-flash": ("2026-06-15",),
    "fun-asr-realtime": ("2025-11-07", "2026-02-28", "2025-09-15"),
    "fun-asr-flash-8k-realtime": ("2026-01-28",),
    "qwen3-asr-flash": ("2025-09-08",),
    "qwen3-asr-flash-realtime": ("2025-10-27", "2026-02-10"),
    "qwen3-asr-flash-filetrans": ("2025-11-17",),
    "qwen3-omni-flash": ("2025-12-01",),
    "qwen3-omni-flash-realtime": ("2025-12-01",),
}


class Catalog:
    """Resolves public model names; overrides replace or add profiles (e.g. from configuration)."""

    def __init__(self, overrides: dict[str, dict[str, object]] | None = None) -> None:
        self._profiles: dict[str, EngineProfile] = {p.name: p for p in _BASE_PROFILES}
        for name, values in (overrides or {}).items():
            base = self._profiles.get(name)
            if base is None:
                family = str(values.get("family", "fun-asr"))
                mode = str(values.get("mode", "file"))
                base = EngineProfile(name, family, mode)
            self._profiles[name] = _override(base, values)

    def names(self) -> list[str]:
        out = list(self._profiles)
        for base, dates in KNOWN_SNAPSHOTS.items():
            out.extend(f"{base}-{date}" for date in dates)
        return sorted(out)

    def resolve(self, name: str | None, *, mode: str | None = None) -> EngineProfile:
        """The profile for ``name``; raises :class:`ModelNotFound` (``Model.NotExist``) if unknown."""
        if not name or not isinstance(name, str):
            raise ModelNotFound("the model parameter is required", param="model")
        profile = self._profiles.get(name)
        if profile is None:
            match = _SNAPSHOT.match(name)
            if match and match.group("base") in self._profiles:
                profile = replace(self._profiles[match.group("base")], name=name)
        if profile is None:
            raise ModelNotFound(f"Model not exist: {name}", param="model")
        if mode is not None and profile.mode != mode and not _compatible(profile.mode, mode):
            raise ModelNotFound(
                f"model {name} is a {profile.mode} model and cannot be used for {mode} recognition",
                param="model",
            )
        return profile


_OVERRIDABLE = frozenset({"family", "mode", "model", "partial_model", "beam_size", "sample_rates"})


def _override(base: EngineProfile, values: dict[str, object]) -> EngineProfile:
    """``base`` with configured fields replaced; unknown fields or bad values are a clear ValueError."""
    unknown = set(values) - _OVERRIDABLE
    if unknown:
        raise ValueError(f"model profile {base.name}: unknown field(s) {', '.join(sorted(unknown))}")
    fields: dict[str, object] = dict(values)
    if "sample_rates" in fields and fields["sample_rates"] is not None:
        fields["sample_rates"] = tuple(int(r) for r in fields["sample_rates"])  # type: ignore[attr-defined]
    if "beam_size" in fields and (not isinstance(fields["beam_size"], int) or not 1 <= fields["beam_size"] <= 10):
        raise ValueError(f"model profile {base.name}: beam_size must be an integer from 1 to 10")
    if fields.get("model", base.model) not in ("whisper-base", "whisper-tiny.en"):
        raise ValueError(f"model profile {base.name}: model must be whisper-base or whisper-tiny.en")
    return replace(base, **fields)  # type: ignore[arg-type]


def _compatible(have: str, want: str) -> bool:
    # A synchronous model may also be used for file jobs (the cloud accepts short files either way).
    return have == "sync" and want == "file"
