"""Convert the GE2E speaker encoder shipped in the ``resemblyzer`` package to ONNX (run once, offline).

The service runs the encoder under onnxruntime with its own numpy mel front end, so torch is needed only
here. Run it in a separate virtual environment, never in the project's one::

    python3.11 -m venv /tmp/convert-venv
    /tmp/convert-venv/bin/pip install torch==2.13.0 resemblyzer==0.1.4 onnx onnxruntime==1.31.1 numpy "setuptools<81"
    /tmp/convert-venv/bin/python scripts/export_speaker_encoder.py

It writes ``src/voxgate/data/speaker_encoder.onnx`` and then checks, on real and synthetic audio:

* the numpy mel front end of :mod:`voxgate.engine.diarize` against ``resemblyzer.audio.wav_to_mel_spectrogram``
  (librosa) — relative error below 1e-4;
* the ONNX model against the torch model, for several batch sizes and window lengths — below 1e-5.

Recorded result (resemblyzer 0.1.4, torch 2.13.0+cpu, onnxruntime 1.31.1, librosa 0.11.0):
``mel max relative error 2.0e-07; onnx max abs difference 4.6e-07`` (5.7 MB model).
(``setuptools<81``: webrtcvad, imported by resemblyzer, still needs ``pkg_resources``.)
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "voxgate" / "data" / "speaker_encoder.onnx"
SAMPLE_AUDIO = ROOT.parent / "shared" / "audio"
sys.path.insert(0, str(ROOT / "src"))


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        assert handle.getframerate() == 16000 and handle.getsampwidth() == 2
        data = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
    return data.astype(np.float32) / 32768.0


def _test_signals() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    signals = [_read_wav(p) for p in sorted(SAMPLE_AUDIO.glob("*.wav"))]
    t = np.arange(16000 * 2) / 16000
    signals.append((0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32))
    signals.append((0.1 * rng.standard_normal(12345)).astype(np.float32))
    return signals


def export() -> None:
    import torch
    from resemblyzer import VoiceEncoder

    encoder = VoiceEncoder(device="cpu", verbose=False).eval()
    example = torch.zeros(2, 160, 40)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        encoder,
        (example,),
        str(OUT),
        input_names=["mels"],
        output_names=["embeddings"],
        dynamic_axes={"mels": {0: "batch", 1: "frames"}, "embeddings": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB)")


def verify() -> None:
    import onnxruntime
    import torch
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import wav_to_mel_spectrogram

    from voxgate.engine.diarize import mel_spectrogram

    worst_mel = 0.0
    mels = []
    for signal in _test_signals():
        reference = wav_to_mel_spectrogram(signal)
        ours = mel_spectrogram(signal)
        assert reference.shape == ours.shape, (reference.shape, ours.shape)
        rel = float(np.max(np.abs(reference - ours)) / max(float(np.max(np.abs(reference))), 1e-12))
        worst_mel = max(worst_mel, rel)
        mels.append(ours)
    print(f"mel max relative error {worst_mel:.1e}")
    assert worst_mel < 1e-4

    encoder = VoiceEncoder(device="cpu", verbose=False).eval()
    session = onnxruntime.InferenceSession(str(OUT), providers=["CPUExecutionProvider"])
    worst = 0.0
    for frames, batch in ((160, 1), (160, 7), (90, 3), (240, 2)):
        parts = [m[:frames] for m in mels if m.shape[0] >= frames][:batch]
        while len(parts) < batch:
            parts.append(np.abs(np.random.default_rng(len(parts)).standard_normal((frames, 40))).astype(np.float32))
        x = np.stack(parts).astype(np.float32)
        with torch.no_grad():
            want = encoder(torch.from_numpy(x)).numpy()
        got = session.run(None, {"mels": x})[0]
        worst = max(worst, float(np.max(np.abs(want - got))))
    print(f"onnx max abs difference {worst:.1e}")
    assert worst < 1e-5


if __name__ == "__main__":
    if "--verify-only" not in sys.argv:
        export()
    verify()
