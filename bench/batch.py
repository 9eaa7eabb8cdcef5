"""Batch file recognition: voxgate's engine against plain faster-whisper, side by side in one run.

Measures, for the same Whisper base int8 model on the same speech:
  * x real time of voxgate (VAD-aligned blocks, windows batched, word timestamps on)
  * x real time of plain ``WhisperModel.transcribe(vad_filter=True, word_timestamps=True)``
  * their ratio, each one's peak RSS (each run in its own process), WER against the script
  * peak RSS of voxgate on a long file built by concatenation (default 60 min, plus 2x that)
Writes bench/results/batch.json and the table in docs/benchmarks.md (section "Batch").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import update_doc  # noqa: E402
from tests.conftest import audio_file, join_wavs, synth  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MODEL_DIR = Path(os.environ.get("VOXGATE_MODEL_DIR", Path.home() / ".cache" / "voxgate" / "models"))

SCRIPT = [
    "The committee met on Tuesday to review the budget for the coming year.",
    "Several members raised concerns about the cost of the new bridge across the river.",
    "After a long discussion, they agreed to ask the engineers for a second estimate.",
    "Meanwhile, the library will extend its opening hours during the winter months.",
    "Volunteers are needed to help with the reading program for young children.",
    "The weather service expects heavy snow in the northern valleys by Friday evening.",
    "Drivers should carry chains and check the road reports before they leave.",
    "The school board announced that classes will start one hour later next week.",
    "Parents can find the new timetable on the notice board at the main entrance.",
    "Finally, the town thanks everyone who took part in the spring cleaning day.",
]


def synth_speech(workdir: Path, repeats: int) -> tuple[Path, str]:
    """About ``repeats`` x 50 s of speech: synthesized sentences and real recordings with pauses."""
    parts: list[Path] = []
    words: list[str] = []
    for index, sentence in enumerate(SCRIPT):
        voice = ("en-us", "en-gb", "en-us+f3")[index % 3]
        parts.append(synth(sentence, workdir / f"s{index}.wav", voice=voice, speed=155))
        words.append(sentence)
    for name, text in (("goforward.wav", "go forward ten meters"), ("something.wav", "go somewhere and do something")):
        parts.append(audio_file(name))
        words.append(text)
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
    if kind == "plain":
        from faster_whisper import WhisperModel

        model = WhisperModel(
            str(MODEL_DIR / "whisper-base"),
            device="cpu",
            compute_type="int8",
            cpu_threads=os.cpu_count() or 1,
            local_files_only=True,
        )
        start = time.perf_counter()
        segments, info = model.transcribe(str(path), vad_filter=True, word_timestamps=True)
        text = " ".join(s.text.strip() for s in segments)
        elapsed = time.perf_counter() - start
        duration = info.duration
    else:
        from voxgate.engine.catalog import Catalog
        from voxgate.engine.recognizer import EngineConfig, Recognizer
        from voxgate.engine.types import RecognitionOptions

        recognizer = Recognizer(EngineConfig(model_dir=MODEL_DIR))
        recognizer.model("whisper-base")
        start = time.perf_counter()
        result = recognizer.transcribe_file(path, RecognitionOptions(), Catalog().resolve("fun-asr"))
        elapsed = time.perf_counter() - start
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


def wer(reference: str, hypothesis: str) -> float:
    from tests.conftest import wer as test_wer

    return test_wer(reference, hypothesis)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=4, help="copies of the ~50 s script (default 4)")
    parser.add_argument("--long-minutes", type=int, default=60, help="long-file RSS check length (0 = skip)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        speech, reference = synth_speech(workdir, args.repeats)
        plain = measure("plain", speech)
        ours = measure("voxgate", speech)
        long_runs = []
        if args.long_minutes:
            for minutes in (args.long_minutes, args.long_minutes * 2):
                run = measure("voxgate", long_file(workdir, speech, minutes))
                long_runs.append(
                    {"minutes": minutes, "peak_rss_mb": run["peak_rss_mb"], "x_real_time": run["x_real_time"]}
                )
    ratio = float(ours["x_real_time"]) / float(plain["x_real_time"])  # type: ignore[arg-type]
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "audio_s": ours["audio_s"],
        "plain_faster_whisper": {k: plain[k] for k in ("x_real_time", "peak_rss_mb", "elapsed_s")}
        | {"wer": wer(reference, str(plain["text"]))},
        "voxgate": {k: ours[k] for k in ("x_real_time", "peak_rss_mb", "elapsed_s")}
        | {"wer": wer(reference, str(ours["text"]))},
        "speedup": ratio,
        "long_file": long_runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batch.json").write_text(json.dumps(result, indent=2))
    lines = [
        "## Batch file recognition (`bench/batch.py`)",
        "",
        f"Whisper base int8, word timestamps on, {float(ours['audio_s']):.0f} s of speech, "
        f"{os.cpu_count()} CPU cores, both measured in the same run.",
        "",
        "| engine | x real time | peak RSS | WER |",
        "|---|---|---|---|",
        f"| plain faster-whisper `transcribe(vad_filter=True)` | {plain['x_real_time']:.1f} | "
        f"{plain['peak_rss_mb']:.0f} MB | {result['plain_faster_whisper']['wer']:.1%} |",  # type: ignore[index]
        f"| voxgate engine | {ours['x_real_time']:.1f} | {ours['peak_rss_mb']:.0f} MB | "
        f"{result['voxgate']['wer']:.1%} |",  # type: ignore[index]
        "",
        f"Speed-up: **{ratio:.2f}x**.",
    ]
    if long_runs:
        lines += ["", "| long file | peak RSS | x real time |", "|---|---|---|"]
        lines += [f"| {r['minutes']} min | {r['peak_rss_mb']:.0f} MB | {r['x_real_time']:.1f} |" for r in long_runs]
    update_doc("batch", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
