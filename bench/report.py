"""Write a benchmark's table into its own section of docs/benchmarks.md (other sections are kept)."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\nNumbers written by `make bench` (`bench/*.py`); raw results in `bench/results/*.json`. "
    "Every ratio compares runs measured side by side in the same run on the same machine.\n"
)


def update_doc(section: str, body: str) -> None:
    """Replace (or append) the block between ``<!-- section:start -->`` and ``<!-- section:end -->``."""
    text = DOC.read_text() if DOC.exists() else HEADER
    start_marker, end_marker = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    block = f"{start_marker}\n{body.rstrip()}\n{end_marker}"
    if start_marker in text and end_marker in text:
        text = text[: text.index(start_marker)] + block + text[text.index(end_marker) + len(end_marker) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
