"""Real-time recognition on real read speech, alone and under mixed load, against a naive baseline.

Every session streams real recordings (two_cities 44 s, beckett 10 s, the CMU clips; 1.2-2.0 s pauses between
recordings, each session starting at a different one) over ``/api-ws/v1/inference`` in 100 ms frames at
real-time pace, with ``max_sentence_silence=500``. Sentence ends inside a recording are the VAD's own.

Scenarios, one server, one run:

- capacity curve: 1, 2, 4, 6, 8 English sessions (``language_hints=["en"]``) and 1, 2, 3, 4 multilingual ones
  (no hint), at the default admission (refusals are counted);
- mixed load: 4 English sessions for ``--mixed-seconds`` (default 600) while file jobs of a >= 5-minute real
  recording run back to back and a synchronous recognition is made every 10 s;
- naive baseline: re-transcribing the utterance buffer every second (as common streaming-Whisper servers do).

Per scenario: final lag from the end-of-sentence silence (``end_time`` of the final + 500 ms sent) and from the
end of speech (``end_time`` sent), p50/p95/max; first interim; share of final decodes on the short window;
lag drift (second half minus first half); WER of the finals against the references and against the file path
(the same engine's file recognition of the same audio); the file jobs' x real time. Writes
bench/results/streaming.json and the streaming section of docs/benchmarks.md.

    .venv/bin/python bench/streaming.py [--curve-seconds 70] [--mixed-seconds 600] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import jiwer
import numpy as np
import psutil
import websocket

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import update_doc  # noqa: E402
from tests.conftest import API_KEY, MODEL_DIR, REFERENCES, audio_file, start_server, stop_server  # noqa: E402

RESULTS = ROOT / "bench" / "results"
RATE = 16_000
FRAME = 3200  # bytes = 100 ms of 16 kHz 16-bit mono
SILENCE_MS = 500
AUTH = {"Authorization": f"Bearer {API_KEY}"}
RECORDINGS = [
    (name, REFERENCES[name]) for name in ("two_cities_16k.wav", "beckett_16k.wav", "goforward.wav", "something.wav")
]


def normalize(text: str) -> str:
    clean = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])
    return " ".join(clean(re.sub(r"\b10\b", "ten", text)).split())


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize(reference), normalize(hypothesis) or "<empty>"))


def read_pcm(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").copy()


def build_track(seconds: float, start: int, seed: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Real recordings in turn from ``start`` with pauses, to ``seconds``; returns audio and (end sample, text)."""
    rng = np.random.default_rng(seed)
    clips = [(read_pcm(audio_file(name)), text) for name, text in RECORDINGS]
    parts = [np.zeros(RATE // 2, dtype=np.int16)]
    refs: list[tuple[int, str]] = []
    pos = parts[0].shape[0]
    index = start
    while pos < seconds * RATE:
        pcm, text = clips[index % len(clips)]
        pause = np.zeros(int(rng.uniform(1.2, 2.0) * RATE), dtype=np.int16)
        parts += [pcm, pause]
        pos += pcm.shape[0] + pause.shape[0]
        refs.append((pos - pause.shape[0], text))
        index += 1
    return np.concatenate(parts), refs


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


class Session(threading.Thread):
    """One client: sends its track at real-time pace and records every event with its arrival time."""

    def __init__(self, url: str, track: np.ndarray, hints: list[str] | None, name: str) -> None:
        super().__init__(daemon=True)
        self.url, self.track, self.hints, self.name = url, track, hints, name
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.t0 = 0.0
        self.sent_samples = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            ws = websocket.create_connection(self.url, header=[f"Authorization: Bearer {API_KEY}"], timeout=300)
            params: dict[str, Any] = {"format": "pcm", "sample_rate": RATE, "max_sentence_silence": SILENCE_MS}
            if self.hints:
                params["language_hints"] = self.hints
            payload = {"task_group": "audio", "task": "asr", "function": "recognition", "model": "fun-asr-realtime"}
            header = {"action": "run-task", "task_id": self.name, "streaming": "duplex"}
            ws.send(json.dumps({"header": header, "payload": {**payload, "parameters": params, "input": {}}}))
            started = json.loads(ws.recv())
            if started["header"]["event"] != "task-started":
                self.error = started["header"].get("error_code", "refused")
                return
            reader = threading.Thread(target=self._read, args=(ws,), daemon=True)
            reader.start()
            data = self.track.tobytes()
            self.t0 = time.perf_counter()
            for index, offset in enumerate(range(0, len(data), FRAME)):
                delay = self.t0 + index * 0.1 - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                ws.send_binary(data[offset : offset + FRAME])
                self.sent_samples = (offset + FRAME) // 2
            finish = {"header": {**header, "action": "finish-task"}, "payload": {"input": {}}}
            ws.send(json.dumps(finish))
            reader.join(timeout=300)
            ws.close()
        except Exception as exc:  # recorded in the results
            self.error = repr(exc)

    def _read(self, ws: websocket.WebSocket) -> None:
        while True:
            try:
                event = json.loads(ws.recv())
            except Exception:
                return
            self.events.append((time.perf_counter(), event))
            if event["header"]["event"] in ("task-finished", "task-failed"):
                return

    def sent_at(self, ms: float) -> float:
        """Wall time at which audio up to ``ms`` had been sent."""
        return self.t0 + ms / 1000


def analyse(session: Session, refs: list[tuple[int, str]]) -> dict[str, Any]:
    finals: list[tuple[float, dict[str, Any]]] = []
    first_interim: dict[int, float] = {}
    for at, event in session.events:
        if event["header"]["event"] != "result-generated":
            continue
        sentence = event["payload"]["output"]["sentence"]
        if sentence.get("heartbeat"):
            continue
        if sentence["end_time"] is None:
            first_interim.setdefault(sentence["sentence_id"], at - session.sent_at(sentence["begin_time"]))
        else:
            finals.append((at, sentence))
    lags: list[tuple[float, float]] = []
    from_speech: list[float] = []
    for at, sentence in finals:
        if not sentence["text"].strip():
            continue
        lags.append((at - session.t0, at - session.sent_at(sentence["end_time"] + SILENCE_MS)))
        from_speech.append(at - session.sent_at(sentence["end_time"]))
    sent_refs = [text for end, text in refs if end <= session.sent_samples]
    hypothesis = " ".join(s["text"] for _, s in finals)
    duration = (session.events[-1][0] - session.t0) if session.events else 0.0
    early = [lag for when, lag in lags if when < duration / 2]
    late = [lag for when, lag in lags if when >= duration / 2]
    return {
        "lags": [lag for _, lag in lags],
        "from_speech": from_speech,
        "first_interims": list(first_interim.values()),
        "drift_s": (statistics.median(late) - statistics.median(early)) if early and late else None,
        "wer": wer(" ".join(sent_refs), hypothesis) if sent_refs else None,
        "hypothesis": hypothesis,
        "error": session.error,
    }


def scrape(url: str) -> dict[str, float]:
    """The counters of /metrics that the benchmark reports."""
    text = httpx.get(url + "/metrics", headers=AUTH, timeout=10).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("voxgate_realtime_final_decodes_total", "voxgate_realtime_speculative_abandoned_total")):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def run_sessions(
    server_url: str, pid: int, tracks: list[tuple[np.ndarray, list[tuple[int, str]]]], hints: list[str] | None, tag: str
) -> dict[str, Any]:
    url = server_url.replace("http://", "ws://") + "/api-ws/v1/inference"
    process = psutil.Process(pid)
    cpu_before = sum(process.cpu_times()[:2])
    counters_before = scrape(server_url)
    wall_before = time.perf_counter()
    sessions = [Session(url, track, hints, f"{tag}-{i}") for i, (track, _) in enumerate(tracks)]
    for session in sessions:
        session.start()
        time.sleep(0.3)  # clients arrive one after another
    for session in sessions:
        session.join(timeout=3600)
    wall = time.perf_counter() - wall_before
    cpu = sum(process.cpu_times()[:2]) - cpu_before
    counters = {k: v - counters_before.get(k, 0.0) for k, v in scrape(server_url).items()}
    per = [analyse(s, refs) for s, (_, refs) in zip(sessions, tracks, strict=True)]
    served = [p for p in per if not p["error"]]
    lags = [x for p in served for x in p["lags"]]
    from_speech = [x for p in served for x in p["from_speech"]]
    firsts = [x for p in served for x in p["first_interims"]]
    drifts = [p["drift_s"] for p in served if p["drift_s"] is not None]
    decodes = {k.split('path="')[1].rstrip('"}'): v for k, v in counters.items() if 'path="' in k}
    total_decodes = sum(decodes.values())
    return {
        "sessions": len(sessions),
        "admitted": len(served),
        "refused": [p["error"] for p in per if p["error"]],
        "audio_seconds_per_session": round(len(tracks[0][0]) / RATE, 1),
        "final_lag_p50_s": pct(lags, 50),
        "final_lag_p95_s": pct(lags, 95),
        "final_lag_max_s": max(lags) if lags else None,
        "lag_from_speech_end_p50_s": pct(from_speech, 50),
        "lag_from_speech_end_p95_s": pct(from_speech, 95),
        "lag_from_speech_end_max_s": max(from_speech) if from_speech else None,
        "first_interim_p50_s": pct(firsts, 50),
        "first_interim_p95_s": pct(firsts, 95),
        "short_window_share": (decodes.get("fast", 0) + decodes.get("retried", 0)) / total_decodes
        if total_decodes
        else None,
        "final_decodes": decodes,
        "speculative_abandoned": counters.get("voxgate_realtime_speculative_abandoned_total", 0.0),
        "finals": len(lags),
        "drift_s_median": statistics.median(drifts) if drifts else None,
        "wer_finals": statistics.mean(p["wer"] for p in served if p["wer"] is not None) if served else None,
        "server_cpu_percent": round(100 * cpu / wall / (os.cpu_count() or 1), 1),
        "per_session": [{k: v for k, v in p.items() if k in ("wer", "drift_s", "error")} for p in per],
    }


def file_path_wer(tracks: list[tuple[np.ndarray, list[tuple[int, str]]]], work: Path) -> float:
    """WER of the same engine's file recognition (what a file job returns) on the same tracks."""
    from voxgate.engine.catalog import Catalog
    from voxgate.engine.recognizer import EngineConfig, Recognizer
    from voxgate.engine.types import RecognitionOptions

    recognizer = Recognizer(EngineConfig(model_dir=MODEL_DIR))
    recognizer.start()
    profile = Catalog().resolve("fun-asr", mode="file")
    scores = []
    try:
        for index, (track, refs) in enumerate(tracks):
            path = work / f"track{index}.wav"
            write_wav(path, track)
            result = recognizer.transcribe_file(path, RecognitionOptions(language="en"), profile)
            text = " ".join(s.text for s in result.transcripts[0].sentences)
            scores.append(wer(" ".join(t for _, t in refs), text))
    finally:
        recognizer.stop()
    return statistics.mean(scores)


def write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm.astype("<i2").tobytes())


class Background(threading.Thread):
    """File jobs back to back and a synchronous recognition every 10 s, until stopped."""

    def __init__(self, server_url: str, file_path: Path, file_seconds: float, clip: Path) -> None:
        super().__init__(daemon=True)
        self.url, self.file_path, self.file_seconds, self.clip = server_url, file_path, file_seconds, clip
        self.stop = threading.Event()
        self.jobs: list[dict[str, Any]] = []
        self.sync_latencies: list[float] = []
        self._sync = threading.Thread(target=self._sync_loop, daemon=True)

    def run(self) -> None:
        self._sync.start()
        while not self.stop.is_set():
            self.jobs.append(self.one_job())

    def one_job(self) -> dict[str, Any]:
        started = time.perf_counter()
        body = {"model": "fun-asr", "input": {"file_urls": [self.file_path.as_uri()]}, "parameters": {}}
        headers = {**AUTH, "X-DashScope-Async": "enable"}
        submitted = httpx.post(self.url + "/api/v1/services/audio/asr/transcription", json=body, headers=headers)
        task_id = submitted.json()["output"]["task_id"]
        while True:
            time.sleep(0.5)
            output = httpx.get(f"{self.url}/api/v1/tasks/{task_id}", headers=AUTH, timeout=30).json()["output"]
            if output["task_status"] not in ("PENDING", "RUNNING"):
                break
        wall = time.perf_counter() - started
        text = ""
        if output["task_status"] == "SUCCEEDED":
            result = httpx.get(output["results"][0]["transcription_url"], timeout=30).json()
            text = " ".join(s["text"] for s in result["transcripts"][0]["sentences"])
        return {"status": output["task_status"], "wall_s": wall, "x_real_time": self.file_seconds / wall, "text": text}

    def _sync_loop(self) -> None:
        while not self.stop.wait(10.0):
            started = time.perf_counter()
            with self.clip.open("rb") as handle:
                response = httpx.post(
                    self.url + "/v1/audio/transcriptions",
                    headers=AUTH,
                    files={"file": (self.clip.name, handle, "audio/wav")},
                    data={"model": "qwen3-asr-flash"},
                    timeout=120,
                )
            if response.status_code == 200:
                self.sync_latencies.append(time.perf_counter() - started)


def long_file(work: Path, minimum_s: float) -> tuple[Path, float, str]:
    """A >= ``minimum_s`` real recording: the recordings joined with pauses, repeated."""
    track, refs = build_track(minimum_s, 0, 99)
    path = work / "long.wav"
    write_wav(path, track)
    return path, track.shape[0] / RATE, " ".join(t for _, t in refs)


def naive_baseline(tracks: list[tuple[np.ndarray, list[tuple[int, str]]]], seconds: float) -> dict[str, Any]:
    """Each stream re-transcribes its open utterance buffer every second (shared WhisperModel, base)."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(MODEL_DIR / "whisper-base"), device="cpu", compute_type="int8", local_files_only=True)
    lags: list[float] = []
    calls: list[float] = []
    lock = threading.Lock()

    def stream(track: np.ndarray) -> None:
        audio = track.astype(np.float32) / 32768
        start = time.perf_counter()
        cut = 0
        next_update = 1.0
        while True:
            now = time.perf_counter() - start
            if now < next_update:
                time.sleep(next_update - now)
            available = min(len(audio), int((time.perf_counter() - start) * RATE))
            if available >= min(len(audio), int(seconds * RATE)):
                return
            began = time.perf_counter()
            segments = list(
                model.transcribe(audio[cut:available], language="en", beam_size=1, condition_on_previous_text=False)[0]
            )
            done = time.perf_counter()
            with lock:
                calls.append(done - began)
            if len(segments) >= 2:  # the segments before the last are final; their end closes a sentence
                end = cut + int(segments[-2].end * RATE)
                with lock:
                    lags.append((done - start) - (end / RATE + SILENCE_MS / 1000))
                cut = end
            next_update = max(next_update + 1.0, done - start)

    threads = [threading.Thread(target=stream, args=(track,)) for track, _ in tracks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "streams": len(tracks),
        "seconds": seconds,
        "update_call_p50_s": pct(calls, 50),
        "update_call_p95_s": pct(calls, 95),
        "final_lag_p50_s": pct(lags, 50),
        "final_lag_p95_s": pct(lags, 95),
        "final_lag_max_s": max(lags) if lags else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curve-seconds", type=float, default=70.0)
    parser.add_argument("--mixed-seconds", type=float, default=600.0)
    parser.add_argument("--file-seconds", type=float, default=300.0)
    parser.add_argument("--baseline-seconds", type=float, default=30.0)
    parser.add_argument("--english", default="1,2,4,6,8")
    parser.add_argument("--multilingual", default="1,2,3,4")
    parser.add_argument("--quick", action="store_true", help="1 and 4 English, 1 multilingual, 120 s mixed")
    args = parser.parse_args()
    if args.quick:
        args.english, args.multilingual, args.mixed_seconds, args.file_seconds = "1,4", "1", 120.0, 120.0

    work = Path(tempfile.mkdtemp(prefix="voxgate-stream-bench-"))
    english = [int(n) for n in args.english.split(",") if n]
    multilingual = [int(n) for n in args.multilingual.split(",") if n]
    most = max(english + multilingual + [4])
    curve_tracks = [build_track(args.curve_seconds, i, i) for i in range(most)]
    mixed_tracks = [build_track(args.mixed_seconds, i, 10 + i) for i in range(4)]
    long_path, long_seconds, long_reference = long_file(work, args.file_seconds)

    print("file path WER on the curve tracks ...", flush=True)
    file_wer = file_path_wer(curve_tracks[:4], work)
    load_before = os.getloadavg()
    results: dict[str, Any] = {"file_path_wer": file_wer, "curve": {}, "machine": {}}
    server = start_server(work / "server")
    try:
        pid = server.process.pid
        for count in english:
            print(f"capacity curve: {count} English sessions", flush=True)
            results["curve"][f"english_{count}"] = run_sessions(server.url, pid, curve_tracks[:count], ["en"], "en")
            print(json.dumps(summary(results["curve"][f"english_{count}"])), flush=True)
        for count in multilingual:
            print(f"capacity curve: {count} multilingual sessions", flush=True)
            results["curve"][f"multilingual_{count}"] = run_sessions(server.url, pid, curve_tracks[:count], None, "ml")
            print(json.dumps(summary(results["curve"][f"multilingual_{count}"])), flush=True)
        print("file job alone", flush=True)
        alone = Background(server.url, long_path, long_seconds, audio_file("something.wav")).one_job()
        print(f"mixed load: 4 English sessions x {args.mixed_seconds:.0f} s + file jobs + sync calls", flush=True)
        background = Background(server.url, long_path, long_seconds, audio_file("something.wav"))
        background.start()
        mixed = run_sessions(server.url, pid, mixed_tracks, ["en"], "mixed")
        background.stop.set()
        background.join(timeout=900)
        jobs = background.jobs
        mixed["file_jobs"] = len(jobs)
        mixed["file_job_seconds"] = round(long_seconds, 1)
        mixed["file_job_x_real_time"] = [round(j["x_real_time"], 2) for j in jobs]
        mixed["file_job_alone_x_real_time"] = round(alone["x_real_time"], 2)
        mixed["file_job_same_result_as_alone"] = all(j["text"] == alone["text"] for j in jobs if j["text"])
        mixed["file_job_wer"] = wer(long_reference, alone["text"])
        mixed["sync_calls"] = len(background.sync_latencies)
        mixed["sync_latency_p50_s"] = pct(background.sync_latencies, 50)
        mixed["sync_latency_max_s"] = max(background.sync_latencies) if background.sync_latencies else None
        results["mixed"] = mixed
        print(json.dumps(summary(mixed)), flush=True)
    finally:
        stop_server(server)
    print(f"naive baseline: 2 streams x {args.baseline_seconds:.0f} s", flush=True)
    results["naive_baseline"] = naive_baseline(curve_tracks[:2], args.baseline_seconds)
    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "streaming.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS / 'streaming.json'}")
    update_doc("streaming", render(results, args))


def summary(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("per_session",)}


def fmt(value: Any, spec: str = "{:.2f}") -> str:
    return "–" if value is None else spec.format(value)


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    """The streaming section of docs/benchmarks.md."""
    load = results["machine"]["loadavg_before"]
    file_wer = results["file_path_wer"]
    lines = [
        "## Real-time streaming on real speech (`bench/streaming.py`)",
        "",
        "Real read English (A Tale of Two Cities 44 s, Beckett 10 s, two CMU clips; 1.2–2.0 s pauses between "
        "recordings, sentence ends inside them found by the VAD) over `/api-ws/v1/inference`, 100 ms frames at "
        f"real-time pace, `max_sentence_silence=500`, 2 CPU cores; load average before the run {load[0]:.1f}. "
        "Lag is measured by the client: from the moment the end-of-sentence silence (final's `end_time` + 500 ms) "
        "had been sent, and from the end of speech (`end_time`).",
        "",
        "| scenario | admitted | lag p50 | lag p95 | lag max | from speech end p95 | first interim p50 "
        "| short-window finals | WER finals | drift |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    scenarios = [(k, v) for k, v in results["curve"].items()]
    if "mixed" in results:
        scenarios.append(("mixed: 4 English + file jobs + sync calls", results["mixed"]))
    for name, r in scenarios:
        label = name.replace("_", " ") + (" sessions" if name.startswith(("english", "multilingual")) else "")
        lines.append(
            f"| {label} | {r['admitted']}/{r['sessions']} | {fmt(r['final_lag_p50_s'])} | "
            f"{fmt(r['final_lag_p95_s'])} | {fmt(r['final_lag_max_s'])} | {fmt(r['lag_from_speech_end_p95_s'])} | "
            f"{fmt(r['first_interim_p50_s'])} | {fmt(r['short_window_share'], '{:.0%}')} | "
            f"{fmt(r['wer_finals'], '{:.1%}')} | {fmt(r['drift_s_median'])} |"
        )
    lines += ["", f"File path WER on the same audio (the engine's file recognition): {file_wer:.1%}."]
    mixed = results.get("mixed")
    if mixed:
        speeds = ", ".join(f"{x:.1f}" for x in mixed["file_job_x_real_time"])
        lines += [
            "",
            f"Mixed load ({mixed['audio_seconds_per_session']:.0f} s per session): {mixed['file_jobs']} file jobs "
            f"of {mixed['file_job_seconds']:.0f} s ran at {speeds}"
            f"× real time (alone: {mixed['file_job_alone_x_real_time']:.1f}×; same result as alone: "
            f"{'yes' if mixed['file_job_same_result_as_alone'] else 'no'}; WER {mixed['file_job_wer']:.1%}); "
            f"{mixed['sync_calls']} synchronous calls, latency p50 {fmt(mixed['sync_latency_p50_s'])} s, "
            f"max {fmt(mixed['sync_latency_max_s'])} s.",
        ]
    naive = results["naive_baseline"]
    lines += [
        "",
        f"Naive baseline in the same run (re-transcribing the open utterance every second with "
        f"`WhisperModel.transcribe`, {naive['streams']} streams, {naive['seconds']:.0f} s): final lag p50 "
        f"{fmt(naive['final_lag_p50_s'])} s, p95 {fmt(naive['final_lag_p95_s'])} s, max "
        f"{fmt(naive['final_lag_max_s'])} s; one update call p50 {fmt(naive['update_call_p50_s'])} s.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
