"""The model view that hands the decoder stored encoder outputs (a fake model: no weights involved)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from voxgate.engine.encoder_reuse import EncodedWindow, _ReusingModel


class FakeModelForReuse:
    """Counts encoder calls; ``encode`` returns a (batch, 2, 3) array whose rows hold the call number and the
    first feature value of the row they come from."""

    def __init__(self) -> None:
        self.encoded = 0
        self.rows: list[int] = []
        self.feature_extractor = "extractor"

    def encode(self, features: np.ndarray) -> np.ndarray:
        self.encoded += 1
        self.rows.append(int(features.shape[0]))
        out = np.zeros((features.shape[0], 2, 3), dtype=np.float32)
        out[:, 0, :] = self.encoded
        out[:, 1, :] = features[:, 0, 0, None]
        return out


def _features(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 80, 3000)).astype(np.float32)


def _stored(features: np.ndarray, marker: float) -> EncodedWindow:
    output = np.full((1, 2, 3), marker, dtype=np.float32)
    output[0, 1, :] = features[0, 0, 0]
    return EncodedWindow(features, cast(Any, output))


def test_the_stored_output_serves_only_its_own_features() -> None:
    model = FakeModelForReuse()
    features = _features(0)
    stored = _stored(features, -1.0)
    view = _ReusingModel(cast(Any, model), [stored])
    assert view.encode(features.copy()) is stored.output
    assert model.encoded == 0
    other = features.copy()
    other[0, 0, 0] += 1.0
    assert np.asarray(view.encode(other))[0, 0, 0] == 1.0  # one value differs: encoded for real
    assert model.encoded == 1
    assert view.feature_extractor == "extractor"  # everything else is the model's own


def test_a_batch_encodes_only_the_rows_not_stored_in_order() -> None:
    model = FakeModelForReuse()
    first, second, third = _features(1), _features(2), _features(3)
    view = _ReusingModel(cast(Any, model), [_stored(first, -1.0), _stored(third, -3.0)])
    out = np.asarray(view.encode(np.concatenate([first, second, third])))
    assert model.rows == [1]  # only the middle row was encoded, alone
    assert out[:, 0, 0].tolist() == [-1.0, 1.0, -3.0]
    assert out[:, 1, 0].tolist() == [first[0, 0, 0], second[0, 0, 0], third[0, 0, 0]]  # each row its own
    both = np.asarray(view.encode(np.concatenate([third, first])))
    assert model.rows == [1]  # every row stored: nothing encoded
    assert both[:, 0, 0].tolist() == [-3.0, -1.0]
    assert np.asarray(view.encode(np.concatenate([second, second]))).shape == (2, 2, 3)
    assert model.rows == [1, 2]  # none stored: the whole batch in one call
