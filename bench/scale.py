"""Scale-out of file work: the celery backend with 1 and 2 worker processes against the in-process backend.

A throwaway Redis (append-only file on) and PostgreSQL are started on loopback, then, one after the other:

* ``inprocess``: one ``voxgate serve`` running file jobs itself (one job worker, one decode thread);
* ``celery-1``: one API node and one ``voxgate worker --concurrency 1``;
* ``celery-2``: one API node and two ``voxgate worker --concurrency 1`` processes.

Every process decodes with one CPU thread. Each setup gets the same set of jobs made of real read speech
(tests/data), submitted at once through the DashScope HTTP API and polled until done: wall time, jobs per minute,
x real time, the median time to answer a submission. The celery setups also get one long file (the same
recordings back to back, 1 s apart, to ``--long-minutes``): time to finish it and the blocks each worker decoded.
Scaling efficiency = (2-worker throughput / 1-worker throughput) / 2. API overhead of the celery path = its
1-worker wall time / the in-process wall time - 1 (same jobs, one decoding thread each).
Writes bench/results/scale.json and its section of docs/benchmarks.md.

    .venv/bin/python bench/scale.py [--jobs 6] [--long-minutes 20] [--model fun-asr]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import update_doc  # noqa: E402
from tests.cluster import postgres_database, redis_server  # noqa: E402
from tests.conftest import API_KEY, audio_file, join_wavs, start_server, stop_server  # noqa: E402
from tests.integration.test_scale_out import start_worker, stop_worker  # noqa: E402

RESULTS = ROOT / "bench" / "results"
RECORDINGS = ("two_cities_16k.wav", "endgame_nagg_nell_16k.wav", "beckett_16k.wav")
ONE_THREAD = {
    "VOXGATE_DECODE_WORKERS": "1",
    "VOXGATE_CPU_THREADS": "1",
    "VOXGATE_JOB_WORKERS": "1",
    "VOXGATE_SUBMIT_RPS": "0",  # no rate limits: the bench polls every task
    "VOXGATE_QUERY_RPS": "0",
}


def seconds(path: Path) -> float:
    with wave.open(str(path)) as reader:
        return reader.getnframes() / reader.getframerate()


def build_jobs(workdir: Path, count: int) -> list[Path]:
    """``count`` files of about a minute: the three recordings in a different order each, 1 s apart."""
    files = []
    for i in range(count):
        order = [RECORDINGS[(i + k) % len(RECORDINGS)] for k in range(len(RECORDINGS))]
        files.append(join_wavs([audio_file(n) for n in order], workdir / f"job{i}.wav", pause_s=1.0))
    return files


def build_long(workdir: Path, minutes: float) -> Path:
    parts = []
    while sum(seconds(audio_file(n)) + 1.0 for n in parts) < minutes * 60:
        parts.append(RECORDINGS[len(parts) % len(RECORDINGS)])
    return join_wavs([audio_file(n) for n in parts], workdir / "long.wav", pause_s=1.0)


def run_jobs(url: str, files: list[Path], model: str) -> dict[str, Any]:
    """Submit every file at once, poll until all are done; wall time and submit latencies."""
    headers = {"Authorization": f"Bearer {API_KEY}", "X-DashScope-Async": "enable"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:

        def submit(path: Path) -> tuple[str, float]:
            began = time.perf_counter()
            body = {"model": model, "input": {"file_urls": [path.as_uri()]}}
            response = client.post("/api/v1/services/audio/asr/transcription", json=body)
            response.raise_for_status()
            return str(response.json()["output"]["task_id"]), time.perf_counter() - began

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(files)) as pool:
            submitted = list(pool.map(submit, files))
        pending = {task_id for task_id, _ in submitted}
        while pending:
            for task_id in list(pending):
                output = client.get(f"/api/v1/tasks/{task_id}").json()["output"]
                if output["task_status"] not in ("PENDING", "RUNNING"):
                    assert output["task_status"] == "SUCCEEDED", output
                    pending.discard(task_id)
            time.sleep(0.2)
        wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "task_ids": [task_id for task_id, _ in submitted],
        "submit_s_median": statistics.median(s for _, s in submitted),
    }


def block_workers(database: str, task_id: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(database.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute(
            "select worker, count(*) from file_blocks where task_id = %s group by worker", (task_id,)
        ).fetchall()
    return {str(worker): int(n) for worker, n in rows}


def measure(
    name: str,
    workdir: Path,
    env: dict[str, str],
    workers: int,
    jobs: list[Path],
    long: Path | None,
    model: str,
    database: str,
) -> dict[str, Any]:
    audio_s = sum(seconds(p) for p in jobs)
    server = start_server(workdir / name, env)
    started = [start_worker(f"w{i + 1}@{name}", server.env, workdir / name) for i in range(workers)]
    try:
        run_jobs(server.url, [audio_file("beckett_16k.wav")] * max(2, workers * 2), model)  # models loaded
        result = run_jobs(server.url, jobs, model)
        out: dict[str, Any] = {
            "workers": workers,
            "jobs": len(jobs),
            "audio_s": round(audio_s, 1),
            "wall_s": round(result["wall_s"], 2),
            "jobs_per_minute": round(len(jobs) / result["wall_s"] * 60, 2),
            "x_real_time": round(audio_s / result["wall_s"], 2),
            "submit_s_median": round(result["submit_s_median"], 4),
        }
        if long is not None:
            done = run_jobs(server.url, [long], model)
            out["long_file"] = {
                "audio_s": round(seconds(long), 1),
                "wall_s": round(done["wall_s"], 2),
                "x_real_time": round(seconds(long) / done["wall_s"], 2),
                "blocks_by_worker": block_workers(database, done["task_ids"][0]),
            }
        return out
    finally:
        for worker in started:
            stop_worker(worker)
        stop_server(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6, help="jobs of about a minute each")
    parser.add_argument("--long-minutes", type=float, default=20.0, help="length of the long file")
    parser.add_argument("--model", default="fun-asr", help="public model name (fun-asr: whisper-base)")
    args = parser.parse_args()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis, postgres_database() as database:
        workdir = Path(tmp)
        jobs = build_jobs(workdir, args.jobs)
        long = build_long(workdir, args.long_minutes)
        shared = {**ONE_THREAD, "VOXGATE_DATABASE_URL": database}
        celery = {**shared, "VOXGATE_JOB_BACKEND": "celery", "VOXGATE_BROKER_URL": redis.url}
        before = measure("inprocess-before", workdir, shared, 0, jobs, None, args.model, database)
        runs = {
            "celery-1": measure("celery-1", workdir, celery, 1, jobs, long, args.model, database),
            "celery-2": measure("celery-2", workdir, celery, 2, jobs, long, args.model, database),
        }
        after = measure("inprocess-after", workdir, shared, 0, jobs, None, args.model, database)
    # the in-process backend before and after the celery runs, averaged, to even out a noisy machine
    wall = (before["wall_s"] + after["wall_s"]) / 2
    runs = {
        "inprocess": {
            **before,
            "wall_s_before": before["wall_s"],
            "wall_s_after": after["wall_s"],
            "wall_s": round(wall, 2),
            "jobs_per_minute": round(len(jobs) / wall * 60, 2),
            "x_real_time": round(before["audio_s"] / wall, 2),
            "submit_s_median": round((before["submit_s_median"] + after["submit_s_median"]) / 2, 4),
        },
        **runs,
    }
    one, two, alone = runs["celery-1"], runs["celery-2"], runs["inprocess"]
    report = {
        "benchmark": "file work on 1 and 2 celery worker processes vs the in-process backend",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "model": args.model,
        "threads_per_process": 1,
        "runs": runs,
        "scaling_efficiency_jobs": round(two["jobs_per_minute"] / one["jobs_per_minute"] / 2, 3),
        "scaling_efficiency_long_file": round(one["long_file"]["wall_s"] / two["long_file"]["wall_s"] / 2, 3),
        "celery_overhead_pct": round((one["wall_s"] / alone["wall_s"] - 1) * 100, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    rows = []
    for name, run in runs.items():
        long_file = run.get("long_file")
        finished = f"{long_file['wall_s']:.0f} s ({long_file['x_real_time']}x)" if long_file else "-"
        rows.append(
            f"| {name} | {run['wall_s']:.1f} s | {run['jobs_per_minute']} | {run['x_real_time']} | "
            f"{run['submit_s_median'] * 1000:.0f} ms | {finished} |"
        )
    update_doc(
        "scale",
        "\n".join(
            [
                "## Scale-out: celery workers (`bench/scale.py`)",
                "",
                f"{args.jobs} jobs of real read speech ({one['audio_s']:.0f} s in all) submitted at once through the "
                f"DashScope API, and one {one['long_file']['audio_s'] / 60:.1f}-minute file; every process decodes "
                f"with one CPU thread (model `{args.model}`); Redis and PostgreSQL on the same machine.",
                "",
                "| setup | jobs wall time | jobs/min | x real time | submit answered (median) | long file done |",
                "|---|---|---|---|---|---|",
                *rows,
                "",
                f"Scaling efficiency from 1 to 2 worker processes: {report['scaling_efficiency_jobs']:.0%} on the "
                f"jobs, {report['scaling_efficiency_long_file']:.0%} on the long file (its blocks per worker: "
                + ", ".join(f"{w.split('@')[0]} {n}" for w, n in sorted(two["long_file"]["blocks_by_worker"].items()))
                + f"). Wall time of the celery path with one worker against the in-process backend (mean of a run "
                f"before and one after the celery runs) on the same jobs: {report['celery_overhead_pct']:+.1f}%. "
                f"Load average at start {load_at_start[0]} (other work on the machine skews every timing).",
            ]
        ),
    )


if __name__ == "__main__":
    main()
