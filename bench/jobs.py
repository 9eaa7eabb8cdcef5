"""File jobs through the DashScope API against the engine alone, side by side in one run.

N file jobs are submitted at once to a real ``voxgate serve`` (``POST /api/v1/services/audio/asr/transcription``,
``file://`` URLs) and polled until every one has finished; the same N files are then recognized by the engine
alone (``Recognizer.transcribe_file``, same settings, same number of workers) in this process. The engine pass
runs before and after the API pass and its mean is used, to even out a noisy machine.

Reports: wall time of each, API overhead % (API wall / engine wall - 1), jobs per minute, x real time,
the server's own queue and processing times (from the task timestamps), WER of the API results.
Writes bench/results/jobs.json.

    .venv/bin/python bench/jobs.py [--jobs 8] [--workers 1]
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import update_doc  # noqa: E402
from tests.conftest import (  # noqa: E402
    API_KEY,
    MODEL_DIR,
    audio_file,
    start_server,
    stop_server,
    synth,
    wer,
)

from voxgate.engine.catalog import Catalog  # noqa: E402
from voxgate.engine.recognizer import EngineConfig, Recognizer  # noqa: E402
from voxgate.engine.types import RecognitionOptions  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MODEL = "fun-asr"
SENTENCES = [
    "The committee met on Tuesday to review the budget for the coming year.",
    "Several members raised concerns about the cost of the new bridge across the river.",
    "The weather service expects heavy snow in the northern valleys by Friday evening.",
    "Parents can find the new timetable on the notice board at the main entrance.",
    "Volunteers are needed to help with the reading program for young children.",
    "Drivers should carry chains and check the road reports before they leave.",
    "The library will extend its opening hours during the winter months.",
    "Finally, the town thanks everyone who took part in the spring cleaning day.",
]
CLIPS = {"goforward.wav": "go forward ten meters", "something.wav": "go somewhere and do something"}


def build_files(workdir: Path, count: int) -> list[tuple[Path, str, float]]:
    """``count`` files of about 10 s: two synthesized sentences and one real recording each."""
    files = []
    for i in range(count):
        first, second = SENTENCES[i % len(SENTENCES)], SENTENCES[(i + 3) % len(SENTENCES)]
        clip = list(CLIPS)[i % 2]
        parts = [synth(first, workdir / f"a{i}.wav"), audio_file(clip), synth(second, workdir / f"b{i}.wav")]
        listing = workdir / f"list{i}.txt"
        listing.write_text("".join(f"file '{p}'\n" for p in parts))
        out = workdir / f"job{i}.wav"
        subprocess.run(
            [
                *("ffmpeg", "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", str(listing)),
                *("-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le", str(out)),
            ],
            check=True,
        )
        seconds = (out.stat().st_size - 44) / 32000
        files.append((out, f"{first} {CLIPS[clip]} {second}", seconds))
    return files


def engine_pass(recognizer: Recognizer, files: list[tuple[Path, str, float]], workers: int) -> float:
    profile = Catalog().resolve(MODEL, mode="file")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda f: recognizer.transcribe_file(f[0], RecognitionOptions(), profile), files))
    return time.perf_counter() - started


def _stamp(text: str) -> float:
    base, _, millis = text.partition(".")
    return calendar.timegm(time.strptime(base, "%Y-%m-%d %H:%M:%S")) + int(millis or 0) / 1000


def api_pass(url: str, files: list[tuple[Path, str, float]]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {API_KEY}", "X-DashScope-Async": "enable"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:

        def submit(path: Path) -> str:
            body = {"model": MODEL, "input": {"file_urls": [path.as_uri()]}}
            response = client.post("/api/v1/services/audio/asr/transcription", json=body)
            response.raise_for_status()
            return str(response.json()["output"]["task_id"])

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(files)) as pool:
            task_ids = list(pool.map(submit, [f[0] for f in files]))
        submitted = time.perf_counter() - started
        done: dict[str, dict[str, Any]] = {}
        while len(done) < len(task_ids):
            for task_id in task_ids:
                if task_id in done:
                    continue
                output = client.get(f"/api/v1/tasks/{task_id}").json()["output"]
                if output["task_status"] not in ("PENDING", "RUNNING"):
                    done[task_id] = output
            time.sleep(0.2)
        wall = time.perf_counter() - started
        wers, queue, processing = [], [], []
        for (_path, reference, _s), task_id in zip(files, task_ids, strict=True):
            output = done[task_id]
            assert output["task_status"] == "SUCCEEDED", output
            text = httpx.get(output["results"][0]["transcription_url"]).json()["transcripts"][0]["text"]
            wers.append(wer(reference, text))
            queue.append(_stamp(output["scheduled_time"]) - _stamp(output["submit_time"]))
            processing.append(_stamp(output["end_time"]) - _stamp(output["scheduled_time"]))
    return {
        "wall_s": wall,
        "submit_all_s": submitted,
        "server_processing_s_sum": sum(processing),
        "server_queue_s_max": max(queue),
        "wer_mean": sum(wers) / len(wers),
        "wer_max": max(wers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="file jobs submitted at once")
    parser.add_argument("--workers", type=int, default=1, help="job workers (server) = engine threads (alone)")
    args = parser.parse_args()
    load_at_start = [round(x, 2) for x in os.getloadavg()]  # other work on the machine skews every timing

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        files = build_files(workdir, args.jobs)
        audio_s = sum(f[2] for f in files)
        recognizer = Recognizer(EngineConfig(model_dir=MODEL_DIR, num_workers=args.workers))
        recognizer.warm_up(["whisper-base"])
        engine_pass(recognizer, files[:1], 1)  # first-call costs out of the way

        engine_before = engine_pass(recognizer, files, args.workers)
        env = {
            "VOXGATE_JOB_WORKERS": str(args.workers),
            "VOXGATE_DECODE_WORKERS": str(args.workers),
            "VOXGATE_SUBMIT_RPS": "0",  # no rate limits: the bench polls every task
            "VOXGATE_QUERY_RPS": "0",
        }
        server = start_server(workdir / "server", env)
        try:
            api_pass(server.url, files[:1])  # warm the server the same way
            api = api_pass(server.url, files)
        finally:
            stop_server(server)
        engine_after = engine_pass(recognizer, files, args.workers)

    engine_wall = (engine_before + engine_after) / 2
    report = {
        "benchmark": "file jobs: DashScope API vs engine alone",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "jobs": args.jobs,
        "workers": args.workers,
        "model": MODEL,
        "audio_seconds_total": round(audio_s, 1),
        "engine": {
            "wall_s_before": round(engine_before, 2),
            "wall_s_after": round(engine_after, 2),
            "wall_s": round(engine_wall, 2),
            "jobs_per_minute": round(args.jobs / engine_wall * 60, 1),
            "x_real_time": round(audio_s / engine_wall, 1),
        },
        "api": {
            "wall_s": round(api["wall_s"], 2),
            "jobs_per_minute": round(args.jobs / api["wall_s"] * 60, 1),
            "x_real_time": round(audio_s / api["wall_s"], 1),
            "submit_all_s": round(api["submit_all_s"], 3),
            "server_processing_s_sum": round(api["server_processing_s_sum"], 2),
            "server_queue_s_max": round(api["server_queue_s_max"], 2),
            "wer_mean": round(api["wer_mean"], 3),
            "wer_max": round(api["wer_max"], 3),
        },
        "api_overhead_pct": round((api["wall_s"] / engine_wall - 1) * 100, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "jobs.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    engine, api = report["engine"], report["api"]
    update_doc(
        "jobs",
        "\n".join(
            [
                "## File jobs through the API (`bench/jobs.py`)",
                "",
                f"{report['jobs']} concurrent jobs ({report['audio_seconds_total']:.0f} s of audio in all), "
                f"{report['workers']} worker(s), submitted through the DashScope API and polled, against the "
                "engine alone on the same files in the same run.",
                "",
                "| path | wall time | jobs/min | x real time |",
                "|---|---|---|---|",
                f"| engine alone | {engine['wall_s']:.1f} s | {engine['jobs_per_minute']} | {engine['x_real_time']} |",
                f"| DashScope API | {api['wall_s']:.1f} s | {api['jobs_per_minute']} | {api['x_real_time']} |",
                "",
                f"API overhead: {report['api_overhead_pct']:+.1f}% of the engine's wall time (server-side "
                f"processing summed to {api['server_processing_s_sum']:.1f} s of the API's {api['wall_s']:.1f} s); "
                f"submitting all jobs took {api['submit_all_s']:.2f} s; mean WER {api['wer_mean']:.1%}.",
            ]
        ),
    )


if __name__ == "__main__":
    main()
