from __future__ import annotations

import json
import shutil
from pathlib import Path

from tokenizers import Tokenizer

from voxgate.engine.models import BUNDLED, MARKER, BundledModel, _package_dir, assemble, model_status
from voxgate.engine.tokenizer_repair import missing_merges, repair_tokenizer

BASE = BUNDLED["whisper-base"]
TINY = BUNDLED["whisper-tiny.en"]


def _shipped_tokenizer(model: BundledModel, tmp_path: Path) -> Path:
    source = _package_dir(model.packages[0]) / model.side_dir / "tokenizer.json"
    copy = tmp_path / f"{model.name}-tokenizer.json"
    shutil.copyfile(source, copy)
    return copy


def test_shipped_base_tokenizer_lacks_the_first_merge_and_is_repaired(tmp_path: Path) -> None:
    path = _shipped_tokenizer(BASE, tmp_path)
    broken = Tokenizer.from_file(str(path))
    assert broken.encode(" the", add_special_tokens=False).ids == [220, 3322]  # "Ġ" + "the": never seen in training
    assert missing_merges(json.loads(path.read_text(encoding="utf-8"))) == [(0, "Ġ t")]

    assert repair_tokenizer(path) == 1
    fixed = Tokenizer.from_file(str(path))
    assert fixed.encode(" the", add_special_tokens=False).ids == [264]
    assert fixed.encode(" Ask Mandarin about the shipping schedule.", add_special_tokens=False).ids == [
        12320,
        42292,
        466,
        264,
        14122,
        7567,
        13,
    ]
    assert repair_tokenizer(path) == 0  # idempotent


def test_complete_tokenizer_is_left_alone(tmp_path: Path) -> None:
    path = _shipped_tokenizer(TINY, tmp_path)
    before = path.read_bytes()
    assert repair_tokenizer(path) == 0
    assert path.read_bytes() == before


def test_synthetic_vocabulary_gets_merge_at_its_rank(tmp_path: Path) -> None:
    vocab = {chr(0x100 + i) if i >= 200 else f"b{i}": i for i in range(256)}
    vocab.update({"a": 10, "b": 11, "c": 12})
    vocab = {k: v for k, v in vocab.items() if v not in (10, 11, 12) or k in "abc"}
    vocab.update({"ab": 256, "abc": 257, "ca": 258})
    tokenizer = {"model": {"type": "BPE", "vocab": vocab, "merges": ["ab c", "c a"]}, "added_tokens": []}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tokenizer), encoding="utf-8")
    assert repair_tokenizer(path) == 1
    assert json.loads(path.read_text(encoding="utf-8"))["model"]["merges"] == ["a b", "ab c", "c a"]


def test_assembly_older_than_the_repair_is_rebuilt(tmp_path: Path) -> None:
    target = assemble(TINY, tmp_path)
    (target / MARKER).write_text(TINY.sha256 + "\n")  # stamp written before tokenizer repair existed
    assert model_status(TINY, tmp_path) == "outdated"
    assemble(TINY, tmp_path)
    assert model_status(TINY, tmp_path) == "ready"
