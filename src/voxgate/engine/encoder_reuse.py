"""Encoder passes shared by language identification and decoding.

The windows that identify a recording's language (a short clip's only window, a file's first windows) are
the same packed windows its decoder reads, so each is encoded once: the language is read off those encoder
outputs, and the decoder is handed the stored outputs instead of encoding the identical windows again (the
encoder is about half of a window's CPU). The batched pipeline is given a view of the model whose ``encode``
returns the stored output for each row of features it was computed from, and encodes only the other rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.audio import pad_or_trim


@dataclass(frozen=True, slots=True)
class EncodedWindow:
    """The log-mel features of one packed speech window, as the batched pipeline computes them, and their
    encoder output."""

    features: np.ndarray  # (1, n_mels, 3000)
    output: ctranslate2.StorageView


def encode_window(model: WhisperModel, audio: np.ndarray) -> EncodedWindow:
    """Encode ``audio`` (at most one decoder window) exactly as the batched pipeline would."""
    features = np.stack([pad_or_trim(model.feature_extractor(audio)[..., :-1])])
    return EncodedWindow(features, model.encode(features))


class _ReusingModel:
    """``model`` with an ``encode`` that returns the stored output of every row of features it has."""

    def __init__(self, model: WhisperModel, windows: Sequence[EncodedWindow]) -> None:
        self._model = model
        self._windows = list(windows)

    def _stored(self, row: np.ndarray) -> ctranslate2.StorageView | None:
        for window in self._windows:
            if window.features.shape[1:] == row.shape and np.array_equal(window.features[0], row):
                return window.output
        return None

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        found = [self._stored(row) for row in features]
        if all(output is None for output in found):
            return self._model.encode(features)
        if len(found) == 1 and found[0] is not None:
            return found[0]
        missing = [i for i, output in enumerate(found) if output is None]
        fresh = iter(list(np.asarray(self._model.encode(np.ascontiguousarray(features[missing])))) if missing else [])
        rows = [next(fresh) if output is None else np.asarray(output)[0] for output in found]
        # the view shares the stacked array's memory and keeps it alive
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(rows)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def reusing_pipeline(model: WhisperModel, windows: Sequence[EncodedWindow]) -> BatchedInferencePipeline:
    """A batched pipeline over ``model`` that does not encode ``windows`` again."""
    return BatchedInferencePipeline(_ReusingModel(model, windows))
