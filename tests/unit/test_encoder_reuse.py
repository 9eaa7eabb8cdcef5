"""The model view that hands the decoder a stored encoder output (a fake model: no weights involved)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from voxgate.engine.encoder_reuse import EncodedWindow, _ReusingModel


class FakeModelForReuse:
    """Counts encoder calls; ``encode`` returns a marker naming the call."""

    def __init__(self) -> None:
        self.encoded = 0
        self.feature_extractor = "extractor"

    def encode(self, features: np.ndarray) -> str:
        self.encoded += 1
        return f"encoded-{self.encoded}"


def test_the_stored_output_serves_only_its_own_features() -> None:
    model = FakeModelForReuse()
    features = np.random.default_rng(0).standard_normal((1, 80, 3000)).astype(np.float32)
    view = _ReusingModel(cast(Any, model), EncodedWindow(features, cast(Any, "stored")))
    assert view.encode(features.copy()) == "stored"
    assert model.encoded == 0
    other = features.copy()
    other[0, 0, 0] += 1.0
    assert view.encode(other) == "encoded-1"  # one value differs: encoded for real
    assert view.encode(np.concatenate([features, features])) == "encoded-2"  # a batch of two: another shape
    assert view.feature_extractor == "extractor"  # everything else is the model's own
