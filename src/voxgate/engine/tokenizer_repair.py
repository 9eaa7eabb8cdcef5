"""Restore byte-level BPE merges missing from a bundled ``tokenizer.json``.

In a GPT-2 style byte-level BPE vocabulary every token above the 256 byte tokens is the product of one
merge, and its id is ``256 + rank`` of that merge. A tokenizer file that lost a merge still decodes
every id but can no longer produce the orphaned token when encoding: the multilingual Whisper base
package ships without the rank-0 merge ``Ġ t``, so " the", " to", " that" encode as two tokens the
model never saw in training. That corrupts every prompt (vocabulary, context, streaming prefixes).
The missing merges are recovered from the vocabulary itself: the orphan's id gives the rank, and the
split is the one whose two halves are both older tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BYTE_TOKENS = 256


def missing_merges(tokenizer: dict[str, Any]) -> list[tuple[int, str]]:
    """``(rank, "left right")`` for every vocabulary token that no merge produces."""
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE":
        return []
    vocab: dict[str, int] = model.get("vocab") or {}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    produced = {m.replace(" ", "", 1) for m in merges}
    special = {t.get("content") for t in tokenizer.get("added_tokens") or []}
    found: list[tuple[int, str]] = []
    for token, token_id in vocab.items():
        if token_id < BYTE_TOKENS or len(token) < 2 or token in produced or token in special:
            continue
        splits = [
            (token[:cut], token[cut:])
            for cut in range(1, len(token))
            if vocab.get(token[:cut], token_id) < token_id and vocab.get(token[cut:], token_id) < token_id
        ]
        if len(splits) == 1:  # only an unambiguous split is restored
            found.append((token_id - BYTE_TOKENS, f"{splits[0][0]} {splits[0][1]}"))
    return sorted(found)


def repair_tokenizer(path: Path) -> int:
    """Insert the missing merges at their ranks, rewriting ``path`` in place; returns how many."""
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    found = missing_merges(tokenizer)
    if not found:
        return 0
    merges = tokenizer["model"]["merges"]
    as_pairs = bool(merges) and not isinstance(merges[0], str)
    for rank, merge in found:
        merges.insert(min(rank, len(merges)), merge.split(" ", 1) if as_pairs else merge)
    path.write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    return len(found)
