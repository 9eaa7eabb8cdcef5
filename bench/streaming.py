"""Real-time recognition through the WebSocket API at real-time pace, against a naive baseline, in one run.

Phase 1: N English sessions (``language_hints=["en"]``: tiny.en partials, base finals) and phase 2: M
multilingual sessions (no language hint: base for both) stream a speech track (real recordings and
synthetic sentences separated by 0.6-1.4 s pauses) over ``/api-ws/v1/inference`` in 100 ms frames, paced at
real time, all at once. Phase 3 (baseline): the same M tracks fed to ``WhisperModel.transcribe`` re-run on the
whole utterance buffer every second (as common streaming-Whisper servers do), in this process.

Reported per phase: first-partial latency (speech onset sent -> first interim of the sentence), interval between
interims, final lag (sentence-ending silence sent -> final received) p50/p95, lag drift (second half minus first
half of the run), server CPU use, WER of finals against the references and against a batch transcript of the
same audio. Writes bench/results/streaming.json.

    .venv/bin/python bench/streaming.py [--english 4] [--multilingual 2] [--seconds 50]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import psutil
import websocket

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import update_doc  # noqa: E402
from tests.conftest import API_KEY, MODEL_DIR, audio_file, start_server, stop_server, synth  # noqa: E402

RESULTS = ROOT / "bench" / "results"
RATE = 16_000
FRAME = 3200  # bytes = 100 ms of 16 kHz 16-bit mono
SILENCE_MS = 800
REAL = [("goforward.wav", "go forward ten meters"), ("something.wav", "go somewhere and do something")]
SENTENCES = [
    "The committee met on Tuesday to review the budget for the coming year.",
    "Several members raised concerns about the cost of the new bridge.",
    "The weather service expects heavy snow in the northern valleys by Friday evening.",
    "Parents can find the new timetable on the notice board at the main entrance.",
    "Volunteers are needed to help with the reading program for young children.",
    "Drivers should carry chains and check the road reports before they leave.",
]


def normalize(text: str) -> str:
    clean = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])
    words = clean(text.replace("10", "ten")).split()
    return " ".join(words)


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalize(reference), normalize(hypothesis) or "<empty>"))


def read_pcm(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        data = handle.readframes(handle.getnframes())
    return np.frombuffer(data, dtype="<i2").copy()


def speech_bounds(pcm: np.ndarray) -> tuple[int, int]:
    """First and last sample of speech in a clip (energy over 20 ms windows)."""
    win = RATE // 50
    energy = np.array([np.abs(pcm[i : i + win].astype(np.float32)).mean() for i in range(0, len(pcm) - win, win)])
    loud = np.nonzero(energy > max(300.0, energy.max() * 0.08))[0]
    if loud.size == 0:
        return 0, len(pcm)
    return int(loud[0] * win), int(min(len(pcm), (loud[-1] + 1) * win))


def build_track(
    clips: list[tuple[np.ndarray, str]], seconds: float, seed: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Clips in a shuffled order separated by pauses; returns the audio and each sentence's speech span (samples)."""
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = [np.zeros(int(0.5 * RATE), dtype=np.int16)]
    spans: list[dict[str, Any]] = []
    pos = parts[0].shape[0]
    while pos < seconds * RATE:
        pcm, text = clips[int(rng.integers(len(clips)))]
        begin, end = speech_bounds(pcm)
        spans.append({"text": text, "begin": pos + begin, "end": pos + end})
        pause = np.zeros(int(rng.uniform(0.6, 1.4) * RATE) + int(SILENCE_MS / 1000 * RATE), dtype=np.int16)
        parts += [pcm, pause]
        pos += pcm.shape[0] + pause.shape[0]
    return np.concatenate(parts), spans


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values), q))


class Session(threading.Thread):
    """One client: sends the track at real-time pace and records every event with its arrival time."""

    def __init__(self, url: str, track: np.ndarray, hints: list[str] | None, name: str) -> None:
        super().__init__(daemon=True)
        self.url, self.track, self.hints, self.name = url, track, hints, name
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.t0 = 0.0
        self.error: str | None = None

    def run(self) -> None:
        try:
            ws = websocket.create_connection(self.url, header=[f"Authorization: Bearer {API_KEY}"], timeout=120)
            params: dict[str, Any] = {"format": "pcm", "sample_rate": RATE, "max_sentence_silence": SILENCE_MS}
            if self.hints:
                params["language_hints"] = self.hints
            ws.send(
                json.dumps(
                    {
                        "header": {"action": "run-task", "task_id": self.name, "streaming": "duplex"},
                        "payload": {
                            "task_group": "audio",
                            "task": "asr",
                            "function": "recognition",
                            "model": "fun-asr-realtime",
                            "parameters": params,
                            "input": {},
                        },
                    }
                )
            )
            started = json.loads(ws.recv())
            if started["header"]["event"] != "task-started":
                self.error = started["header"].get("error_message", "refused")
                return
            reader = threading.Thread(target=self._read, args=(ws,), daemon=True)
            reader.start()
            data = self.track.tobytes()
            self.t0 = time.perf_counter()
            for index, offset in enumerate(range(0, len(data), FRAME)):
                target = self.t0 + index * 0.1
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                ws.send_binary(data[offset : offset + FRAME])
            ws.send(
                json.dumps(
                    {
                        "header": {"action": "finish-task", "task_id": self.name, "streaming": "duplex"},
                        "payload": {"input": {}},
                    }
                )
            )
            reader.join(timeout=120)
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

    def sent_at(self, sample: int) -> float:
        """Wall time at which audio up to ``sample`` had been sent."""
        return self.t0 + (sample / RATE)


def analyse(session: Session, spans: list[dict[str, Any]]) -> dict[str, Any]:
    finals: list[tuple[float, dict[str, Any]]] = []
    interims: dict[int, list[tuple[float, dict[str, Any]]]] = {}
    for at, event in session.events:
        if event["header"]["event"] != "result-generated":
            continue
        sentence = event["payload"]["output"]["sentence"]
        if sentence["end_time"] is None:
            interims.setdefault(sentence["sentence_id"], []).append((at, sentence))
        else:
            finals.append((at, sentence))
    lags: list[tuple[float, float]] = []  # (when, lag)
    first_partials: list[float] = []
    intervals: list[float] = []
    hyp_by_span: list[list[str]] = [[] for _ in spans]
    for at, sentence in finals:
        mid = (sentence["begin_time"] + sentence["end_time"]) / 2 * RATE / 1000
        index = min(range(len(spans)), key=lambda i: abs((spans[i]["begin"] + spans[i]["end"]) / 2 - mid))
        hyp_by_span[index].append(sentence["text"])
        span = spans[index]
        if abs(sentence["end_time"] * RATE / 1000 - span["end"]) < RATE:  # the final that closes this sentence
            lags.append((at - session.t0, at - session.sent_at(span["end"] + SILENCE_MS * RATE // 1000)))
        shown = interims.get(sentence["sentence_id"], [])
        if shown:
            first_partials.append(shown[0][0] - session.sent_at(span["begin"]))
            times = [t for t, _ in shown]
            intervals += [b - a for a, b in itertools.pairwise(times)]
    sent_spans = [s for s in spans if session.sent_at(s["end"]) < session.events[-1][0]] if session.events else []
    reference = " ".join(s["text"] for s in sent_spans)
    hypothesis = " ".join(" ".join(h) for h in hyp_by_span[: len(sent_spans)])
    half = (session.events[-1][0] - session.t0) / 2 if session.events else 0
    early = [lag for when, lag in lags if when < half]
    late = [lag for when, lag in lags if when >= half]
    return {
        "sentences": len(spans),
        "finals": len(finals),
        "lags": [lag for _, lag in lags],
        "first_partials": first_partials,
        "intervals": intervals,
        "drift_s": (statistics.median(late) - statistics.median(early)) if early and late else None,
        "wer_vs_reference": wer(reference, hypothesis),
        "reference": reference,
        "hypothesis": hypothesis,
        "error": session.error,
    }


def run_phase(
    server_url: str,
    pid: int,
    tracks: list[tuple[np.ndarray, list[dict[str, Any]]]],
    hints: list[str] | None,
    label: str,
) -> dict[str, Any]:
    url = server_url.replace("http://", "ws://") + "/api-ws/v1/inference"
    process = psutil.Process(pid)
    cpu_before = sum(process.cpu_times()[:2])
    wall_before = time.perf_counter()
    sessions = [Session(url, track, hints, f"{label}-{i}") for i, (track, _) in enumerate(tracks)]
    for session in sessions:
        session.start()
    for session in sessions:
        session.join(timeout=600)
    wall = time.perf_counter() - wall_before
    cpu = sum(process.cpu_times()[:2]) - cpu_before
    per = [analyse(s, spans) for s, (_, spans) in zip(sessions, tracks, strict=True)]
    lags = [x for p in per for x in p["lags"]]
    firsts = [x for p in per for x in p["first_partials"]]
    intervals = [x for p in per for x in p["intervals"]]
    drifts = [p["drift_s"] for p in per if p["drift_s"] is not None]
    return {
        "sessions": len(sessions),
        "audio_seconds_per_session": round(len(tracks[0][0]) / RATE, 1),
        "errors": [p["error"] for p in per if p["error"]],
        "final_lag_p50_s": pct(lags, 50),
        "final_lag_p95_s": pct(lags, 95),
        "final_lag_max_s": max(lags) if lags else None,
        "first_partial_p50_s": pct(firsts, 50),
        "first_partial_p95_s": pct(firsts, 95),
        "partial_interval_p50_s": pct(intervals, 50),
        "drift_s_median": statistics.median(drifts) if drifts else None,
        "server_cpu_percent_of_2_cores": round(100 * cpu / wall / (os.cpu_count() or 1), 1),
        "wer_finals_vs_reference": round(statistics.mean(p["wer_vs_reference"] for p in per), 4),
        "sentences_closed": sum(len(p["lags"]) for p in per),
        "sentences_sent": sum(p["sentences"] for p in per),
        "per_session": [{k: v for k, v in p.items() if k not in ("lags", "first_partials", "intervals")} for p in per],
    }


def batch_wer(
    model_name: str, tracks: list[tuple[np.ndarray, list[dict[str, Any]]]], language: str | None
) -> list[float]:
    """WER of a plain batch transcript (whole track, VAD on) against the same references."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(MODEL_DIR / model_name), device="cpu", compute_type="int8", local_files_only=True)
    scores = []
    for track, spans in tracks:
        segments, _ = model.transcribe(
            track.astype(np.float32) / 32768, language=language, vad_filter=True, beam_size=1
        )
        scores.append(wer(" ".join(s["text"] for s in spans), " ".join(s.text for s in segments)))
    return scores


def naive_baseline(tracks: list[tuple[np.ndarray, list[dict[str, Any]]]], seconds: float) -> dict[str, Any]:
    """Each stream re-transcribes its whole utterance buffer every second (shared WhisperModel, base)."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(MODEL_DIR / "whisper-base"), device="cpu", compute_type="int8", local_files_only=True)
    lags: list[float] = []
    call_times: list[float] = []
    late_updates = 0
    updates = 0
    lock = threading.Lock()

    def stream(track: np.ndarray, spans: list[dict[str, Any]]) -> None:
        nonlocal late_updates, updates
        audio = track.astype(np.float32) / 32768
        start = time.perf_counter()
        cut = 0
        next_update = 1.0
        pending = [s for s in spans if s["end"] < seconds * RATE]
        while True:
            now = time.perf_counter() - start
            if now < next_update:
                time.sleep(next_update - now)
            now = time.perf_counter() - start
            available = min(len(audio), int(now * RATE))
            if available >= min(len(audio), int(seconds * RATE)):
                return
            began = time.perf_counter()
            segments, _ = model.transcribe(
                audio[cut:available], language="en", beam_size=1, vad_filter=False, condition_on_previous_text=False
            )
            segments = list(segments)
            done = time.perf_counter()
            with lock:
                call_times.append(done - began)
                updates += 1
                if done - start > next_update + 1.0:
                    late_updates += 1
            # commit every segment but the last one; its end closes the sentences inside it
            if len(segments) >= 2:
                commit_end = cut + int(segments[-2].end * RATE)
                for span in [s for s in pending if s["end"] <= commit_end]:
                    lags.append((done - start) - (span["end"] + SILENCE_MS * RATE // 1000) / RATE)
                    pending.remove(span)
                cut = commit_end
            next_update = max(next_update + 1.0, done - start)

    threads = [threading.Thread(target=stream, args=track) for track in tracks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "streams": len(tracks),
        "seconds": seconds,
        "update_call_p50_s": pct(call_times, 50),
        "update_call_p95_s": pct(call_times, 95),
        "updates": updates,
        "updates_late_by_over_1s": late_updates,
        "final_lag_p50_s": pct(lags, 50),
        "final_lag_p95_s": pct(lags, 95),
        "sentences_closed": len(lags),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--english", type=int, default=4)
    parser.add_argument("--multilingual", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=50.0)
    parser.add_argument("--baseline-seconds", type=float, default=25.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="voxgate-stream-bench-"))
    clips = [(read_pcm(audio_file(name)), text) for name, text in REAL]
    for index, sentence in enumerate(SENTENCES):
        clips.append((read_pcm(synth(sentence, work / f"s{index}.wav")), sentence))
    tracks = [build_track(clips, args.seconds, seed) for seed in range(max(args.english, args.multilingual))]

    load_before = os.getloadavg()
    server = start_server(work / "server")
    try:
        results: dict[str, Any] = {}
        print(f"phase 1: {args.english} English sessions x {args.seconds:.0f} s", flush=True)
        results["english"] = run_phase(server.url, server.process.pid, tracks[: args.english], ["en"], "en")
        print(json.dumps({k: v for k, v in results["english"].items() if k != "per_session"}, indent=1), flush=True)
        print(f"phase 2: {args.multilingual} multilingual sessions x {args.seconds:.0f} s", flush=True)
        results["multilingual"] = run_phase(server.url, server.process.pid, tracks[: args.multilingual], None, "ml")
        print(
            json.dumps({k: v for k, v in results["multilingual"].items() if k != "per_session"}, indent=1), flush=True
        )
    finally:
        stop_server(server)
    print(f"phase 3: naive baseline, {args.multilingual} streams x {args.baseline_seconds:.0f} s", flush=True)
    results["naive_baseline"] = naive_baseline(tracks[: args.multilingual], args.baseline_seconds)
    print(json.dumps(results["naive_baseline"], indent=1), flush=True)
    batch = batch_wer("whisper-base", tracks[: max(args.english, args.multilingual)], "en")
    results["batch_wer_base_per_track"] = [round(x, 4) for x in batch]
    for phase, count in (("english", args.english), ("multilingual", args.multilingual)):
        reference = statistics.mean(batch[:count])
        results[phase]["batch_wer_same_tracks"] = round(reference, 4)
        results[phase]["wer_ratio_vs_batch"] = (
            round(results[phase]["wer_finals_vs_reference"] / reference, 3) if reference > 0 else None
        )
    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "streaming.json").write_text(json.dumps(results, indent=2))
    print(f"batch WER (base, whole track): {results['batch_wer_base_per_track']}")
    print(f"wrote {RESULTS / 'streaming.json'}")
    update_doc("streaming", render(results))


def render(results: dict[str, Any]) -> str:
    """The streaming section of docs/benchmarks.md."""
    en, ml, naive = results["english"], results["multilingual"], results["naive_baseline"]
    load = results["machine"]["loadavg_before"]

    def row(name: str, key: str, fmt: str = "{:.2f}") -> str:
        return f"| {name} | {fmt.format(en[key])} | {fmt.format(ml[key])} |"

    lines = [
        "## Real-time streaming (`bench/streaming.py`)",
        "",
        f"{en['sessions']} English and {ml['sessions']} multilingual (Whisper base) sessions through "
        f"`/api-ws/v1/inference`, paced at real time (100 ms frames, {en['audio_seconds_per_session']:.0f} s of "
        f"speech with pauses each); load average before the run {load[0]:.1f}.",
        "",
        "| metric | English sessions | multilingual sessions |",
        "|---|---|---|",
        row("final lag p50 (s)", "final_lag_p50_s"),
        row("final lag p95 (s)", "final_lag_p95_s"),
        row("first partial p50 (s)", "first_partial_p50_s"),
        row("first partial p95 (s)", "first_partial_p95_s"),
        row("interval between partials p50 (s)", "partial_interval_p50_s"),
        row("lag drift, 2nd half - 1st half (s)", "drift_s_median"),
        row("server CPU (% of all cores)", "server_cpu_percent_of_2_cores", "{:.0f}"),
        row("WER of finals", "wer_finals_vs_reference", "{:.1%}"),
        row("batch WER, same audio", "batch_wer_same_tracks", "{:.1%}"),
        row("WER ratio finals / batch", "wer_ratio_vs_batch"),
        "",
        "Final lag is measured from the moment the sentence-ending silence has been received; it can be "
        "negative because a final's decode starts speculatively 250 ms into the silence.",
        "",
        "Naive baseline in the same run (re-transcribing the whole utterance buffer every second with "
        f"`WhisperModel.transcribe`, {naive.get('streams', ml['sessions'])} streams): "
        + ", ".join(f"{k} {v:.2f}" for k, v in naive.items() if isinstance(v, float)),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
