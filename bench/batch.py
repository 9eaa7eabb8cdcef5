"""Batch file recognition: voxgate's engine against plain faster-whisper, side by side in one run.

Measures, for the same Whisper base int8 model on the same real read speech (tests/data recordings):
  * x real time of voxgate (VAD-aligned blocks, <= 30 s windows decoded as scheduler units on every core)
  * x real time of faster-whisper's ``BatchedInferencePipeline`` (batch_size 8, word timestamps), the
    strongest peer, and of plain ``WhisperModel.transcribe(vad_filter=True, word_timestamps=True)``
  * the ratios, each one's peak RSS (each run in its own process), WER against the references; voxgate and
    the pipeline run several rounds in turn and the ratio is the median of the rounds' ratios
  * peak RSS of voxgate on a long file built by concatenation (default 60 min, plus 2x that)
Writes bench/results/batch.json and the table in docs/benchmarks.md (section "Batch").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import update_doc  # noqa: E402
from tests.conftest import REFERENCES, audio_file, join_wavs  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MODEL_DIR = Path(os.environ.get("VOXGATE_MODEL_DIR", Path.home() / ".cache" / "voxgate" / "models"))

REAL = [
    (name, REFERENCES[name]) for name in ("two_cities_16k.wav", "beckett_16k.wav", "goforward.wav", "something.wav")
]


def real_speech(workdir: Path, repeats: int) -> tuple[Path, str]:
    """About ``repeats`` x 62 s of real read English (the recordings with references) with pauses."""
    parts = [audio_file(name) for name, _ in REAL]
    words = [text for _, text in REAL]
    speech = join_wavs(parts * repeats, workdir / "speech.wav", pause_s=1.1)
    return speech, " ".join(words * repeats)


def long_file(workdir: Path, speech: Path, minutes: int) -> Path:
    """A ``minutes``-long file made by repeating ``speech`` (compressed, as real long recordings are)."""
    out = workdir / f"long-{minutes}.mp3"
    if not out.exists():
        subprocess.run(
            [
                "ffmpeg",
                "-y",
                "-loglevel",
                "error",
                "-stream_loop",
                "-1",
                "-i",
                str(speech),
                "-t",
                str(minutes * 60),
                "-c:a",
                "libmp3lame",
                "-b:a",
                "48k",
                str(out),
            ],
            check=True,
        )
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(kind: str, path: Path) -> dict[str, object]:
    """Run one measurement in this process (the parent reads our peak RSS)."""
    if kind in ("plain", "batched"):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        model = WhisperModel(
            str(MODEL_DIR / "whisper-base"),
            device="cpu",
            compute_type="int8",
            cpu_threads=os.cpu_count() or 1,
            local_files_only=True,
        )
        start = time.perf_counter()
        if kind == "plain":
            segments, info = model.transcribe(str(path), vad_filter=True, word_timestamps=True)
        else:
            segments, info = BatchedInferencePipeline(model).transcribe(str(path), batch_size=8, word_timestamps=True)
        text = " ".join(s.text.strip() for s in segments)
        elapsed = time.perf_counter() - start
        duration = info.duration
    else:
        from voxgate.engine.catalog import Catalog
        from voxgate.engine.recognizer import EngineConfig, Recognizer
        from voxgate.engine.scheduler import Tier
        from voxgate.engine.types import RecognitionOptions

        recognizer = Recognizer(EngineConfig(model_dir=MODEL_DIR))
        recognizer.model("whisper-base", Tier.FILE)
        recognizer.start()
        start = time.perf_counter()
        result = recognizer.transcribe_file(path, RecognitionOptions(), Catalog().resolve("fun-asr"))
        elapsed = time.perf_counter() - start
        recognizer.stop()
        text = result.transcripts[0].text
        duration = result.transcripts[0].duration_ms / 1000
    return {
        "kind": kind,
        "elapsed_s": elapsed,
        "audio_s": duration,
        "x_real_time": duration / elapsed,
        "peak_rss_mb": _peak_rss_mb(),
        "text": text,
    }


def measure(kind: str, path: Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", kind, str(path)], capture_output=True, text=True, check=True
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _median_run(runs: list[dict[str, object]]) -> dict[str, object]:
    """The run of median speed, with the largest peak RSS of all the runs."""
    ranked = sorted(runs, key=lambda run: float(run["x_real_time"]))  # type: ignore[arg-type]
    return ranked[len(ranked) // 2] | {"peak_rss_mb": max(float(run["peak_rss_mb"]) for run in runs)}  # type: ignore[arg-type]


def wer(reference: str, hypothesis: str) -> float:
    from tests.conftest import wer as test_wer

    return test_wer(reference, hypothesis)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help="copies of the ~62 s of real speech (default 5)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of voxgate and BatchedInferencePipeline in turn (default 3)"
    )
    parser.add_argument("--long-minutes", type=int, default=60, help="long-file RSS check length (0 = skip)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        speech, reference = real_speech(workdir, args.repeats)
        plain = measure("plain", speech)
        # The two in turn, the order swapped each round, so a drift of the machine's speed hits both alike:
        # the ratio is taken round by round and its median quoted.
        rounds = []
        for i in range(args.rounds):
            order = ("batched", "voxgate") if i % 2 == 0 else ("voxgate", "batched")
            runs = {kind: measure(kind, speech) for kind in order}
            rounds.append(runs)
        batched = _median_run([r["batched"] for r in rounds])
        ours = _median_run([r["voxgate"] for r in rounds])
        round_ratios = [float(r["voxgate"]["x_real_time"]) / float(r["batched"]["x_real_time"]) for r in rounds]  # type: ignore[arg-type]
        long_runs = []
        if args.long_minutes:
            for minutes in (args.long_minutes, args.long_minutes * 2):
                run = measure("voxgate", long_file(workdir, speech, minutes))
                long_runs.append(
                    {"minutes": minutes, "peak_rss_mb": run["peak_rss_mb"], "x_real_time": run["x_real_time"]}
                )
    ratio = float(ours["x_real_time"]) / float(plain["x_real_time"])  # type: ignore[arg-type]
    batched_ratio = statistics.median(round_ratios)
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "audio_s": ours["audio_s"],
        "plain_faster_whisper": {k: plain[k] for k in ("x_real_time", "peak_rss_mb", "elapsed_s")}
        | {"wer": wer(reference, str(plain["text"]))},
        "batched_inference_pipeline": {k: batched[k] for k in ("x_real_time", "peak_rss_mb", "elapsed_s")}
        | {"wer": wer(reference, str(batched["text"]))},
        "voxgate": {k: ours[k] for k in ("x_real_time", "peak_rss_mb", "elapsed_s")}
        | {"wer": wer(reference, str(ours["text"]))},
        "speedup": ratio,
        "speedup_vs_batched": batched_ratio,
        "speedup_vs_batched_rounds": round_ratios,
        "long_file": long_runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batch.json").write_text(json.dumps(result, indent=2))
    lines = [
        "## Batch file recognition (`bench/batch.py`)",
        "",
        f"Whisper base int8, word timestamps on, {float(ours['audio_s']):.0f} s of real read English, "
        f"{os.cpu_count()} CPU cores, all measured in the same run: voxgate and `BatchedInferencePipeline` "
        f"{len(round_ratios)} times each in turn (medians; peak RSS the largest run), each run in its own process.",
        "",
        "| engine | x real time | peak RSS | WER |",
        "|---|---|---|---|",
        f"| plain faster-whisper `transcribe(vad_filter=True)` | {plain['x_real_time']:.1f} | "
        f"{plain['peak_rss_mb']:.0f} MB | {result['plain_faster_whisper']['wer']:.1%} |",  # type: ignore[index]
        f"| faster-whisper `BatchedInferencePipeline` (batch 8) | {batched['x_real_time']:.1f} | "
        f"{batched['peak_rss_mb']:.0f} MB | {result['batched_inference_pipeline']['wer']:.1%} |",  # type: ignore[index]
        f"| voxgate engine | {ours['x_real_time']:.1f} | {ours['peak_rss_mb']:.0f} MB | "
        f"{result['voxgate']['wer']:.1%} |",  # type: ignore[index]
        "",
        f"voxgate vs `BatchedInferencePipeline`: **{batched_ratio:.2f}x** (median of the rounds; each round "
        f"{', '.join(f'{r:.2f}x' for r in round_ratios)}); vs plain `transcribe`: {ratio:.2f}x.",
    ]
    if long_runs:
        lines += ["", "| long file | peak RSS | x real time |", "|---|---|---|"]
        lines += [f"| {r['minutes']} min | {r['peak_rss_mb']:.0f} MB | {r['x_real_time']:.1f} |" for r in long_runs]
    update_doc("batch", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
