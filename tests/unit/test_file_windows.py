"""Packing a block's VAD speech into decoder windows, and where a file block is cut."""

from __future__ import annotations

import numpy as np

from voxgate.engine.recognizer import (
    FULL_ENOUGH,
    MAX_UNIT_BATCH,
    WINDOW_SAMPLES,
    _cut_after_full_windows,
    pack_windows,
    windows_per_unit,
)

SR = 16_000


def runs(*spans_s: tuple[float, float]) -> list[dict[str, int]]:
    return [{"start": int(a * SR), "end": int(b * SR)} for a, b in spans_s]


def test_windows_hold_speech_only_and_at_most_one_decoder_window() -> None:
    audio = np.arange(100 * SR, dtype=np.float32)
    speech = runs((1, 11), (20, 35), (40, 50), (60, 62), (70, 90))  # 10 + 15 + 10 + 2 + 20 s of speech
    windows = pack_windows(audio, speech)
    assert [len(w.runs) for w in windows] == [2, 2, 1]  # 25 s, 12 s, 20 s: silences left out
    for window in windows:
        assert window.audio.shape[0] <= WINDOW_SAMPLES
        assert window.audio.shape[0] == sum(r["end"] - r["start"] for r in window.runs)
        first = window.runs[0]
        assert window.audio[0] == audio[first["start"]]  # the joined audio is the runs' own samples
    assert [r for w in windows for r in w.runs] == speech


def test_a_run_ending_past_the_block_is_clipped_to_it() -> None:
    audio = np.zeros(10 * SR, dtype=np.float32)
    (window,) = pack_windows(audio, runs((2, 4), (8, 12)))
    assert window.runs[-1]["end"] == 10 * SR
    assert window.audio.shape[0] == 4 * SR


def test_a_part_filled_last_window_is_carried_to_the_next_block() -> None:
    buffer = np.zeros(130 * SR, dtype=np.float32)
    speech = runs((0, 29), (30, 59), (60, 89), (90, 119), (120, 125))  # four full windows and 5 s
    cut = _cut_after_full_windows(buffer, speech, 129 * SR)
    assert cut == 120 * SR  # at the start of the part-filled window's first run, in the silence before it


def test_full_windows_and_single_windows_are_not_carried() -> None:
    buffer = np.zeros(130 * SR, dtype=np.float32)
    nearly_full = 30 * FULL_ENOUGH + 1
    speech = runs((0, 29), (30, 59), (60, 60 + nearly_full))
    assert _cut_after_full_windows(buffer, speech, 129 * SR) == 129 * SR
    assert _cut_after_full_windows(buffer, runs((10, 15)), 129 * SR) == 129 * SR  # nothing would be left


def test_units_batch_windows_only_when_every_worker_still_has_one() -> None:
    assert windows_per_unit(1, 2) == 1
    assert windows_per_unit(3, 2) == 1
    assert windows_per_unit(4, 2) == 2
    assert windows_per_unit(40, 2) == MAX_UNIT_BATCH
    assert windows_per_unit(1, 1) == 1
