"""``voxgate listen``: stream the microphone or a file to a server over the run-task WebSocket and show live
captions in the terminal (interim line rewritten in place, finals kept)."""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.text import Text
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from voxgate.engine.types import Sentence, Word

SAMPLE_RATE = 16000
FRAME_MS = 100
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FINISH_TIMEOUT_S = 60.0  # after finish-task, the longest wait for task-finished


class ListenError(Exception):
    """A failure to report to the user in one line (no traceback)."""


@dataclass
class ListenOptions:
    server: str = "http://127.0.0.1:8000"
    api_key: str = ""
    model: str = "fun-asr-realtime"
    language: str | None = None
    vocabulary_id: str | None = None
    diarization: bool = False
    max_sentence_silence: int | None = None


@dataclass
class Caption:
    """A final sentence as received, with the moment it arrived (seconds since streaming began)."""

    sentence_id: int
    begin_time: int
    end_time: int
    text: str
    words: list[dict[str, Any]] = field(default_factory=list)
    speaker_id: int | None = None
    received_s: float = 0.0

    def as_sentence(self) -> Sentence:
        words = [
            Word(int(w["begin_time"]), int(w["end_time"] or w["begin_time"]), str(w["text"]), str(w["punctuation"]))
            for w in self.words
        ]
        return Sentence(self.begin_time, self.end_time, self.text, words, speaker_id=self.speaker_id)


def inference_url(server: str) -> str:
    """``http(s)://host[:port][/prefix]`` (or ws(s)://) → the run-task WebSocket URL."""
    parts = urlsplit(server if "://" in server else f"http://{server}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ListenError(f"--server must be an http(s):// or ws(s):// URL (got '{server}')")
    path = parts.path.rstrip("/")
    if not path.endswith("/api-ws/v1/inference"):
        path += "/api-ws/v1/inference"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


# -- audio sources ---------------------------------------------------------------------------------
def file_frames(path: Path, speed: float = 1.0, stop: threading.Event | None = None) -> Iterator[bytes]:
    """16 kHz pcm16 frames of 100 ms decoded from any audio/video file, paced at ``speed`` × real time,
    until the file ends or ``stop`` is set."""
    from voxgate.audio.decode import iter_channel
    from voxgate.errors import VoxgateError

    if not path.is_file():
        raise ListenError(f"no such file: {path}")
    started = time.monotonic()
    sent = 0
    try:
        for chunk in iter_channel(path, 0, chunk_seconds=5.0):
            pcm = (np.clip(chunk, -1.0, 1.0) * 32767).astype("<i2")
            for start in range(0, pcm.shape[0], FRAME_SAMPLES):
                if stop is not None and stop.is_set():
                    return
                frame = pcm[start : start + FRAME_SAMPLES]
                due = started + sent / SAMPLE_RATE / speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sent += frame.shape[0]
                yield frame.tobytes()
    except VoxgateError as exc:
        raise ListenError(f"{path.name}: {exc.message}") from exc


def microphone_frames(stop: threading.Event, device: str | None = None) -> Iterator[bytes]:
    """100 ms pcm16 frames from an input device through PortAudio, until ``stop`` is set."""
    try:
        import sounddevice
    except OSError as exc:  # the PortAudio library itself is missing
        raise ListenError(
            f"no audio input: the PortAudio library is not installed ({exc}). "
            "Install it (Debian: apt-get install libportaudio2) or pass a FILE to stream a recording."
        ) from exc
    try:
        sounddevice.query_devices(device, kind="input")
    except (ValueError, sounddevice.PortAudioError) as exc:
        raise ListenError(f"no audio input device found ({exc}). Pass a FILE to stream a recording instead.") from exc
    frames: queue.Queue[bytes] = queue.Queue()

    def collect(data: Any, _count: int, _time: Any, _status: Any) -> None:
        frames.put(bytes(data))

    try:
        stream = sounddevice.RawInputStream(
            samplerate=SAMPLE_RATE,
            channels=1,
            dtype="int16",
            blocksize=FRAME_SAMPLES,
            device=device,
            callback=collect,
        )
    except sounddevice.PortAudioError as exc:
        raise ListenError(f"cannot open the audio input device: {exc}") from exc
    with stream:
        while not stop.is_set():
            with contextlib.suppress(queue.Empty):
                yield frames.get(timeout=0.2)


# -- the session -------------------------------------------------------------------------------------
def _command(action: str, task_id: str, payload: dict[str, Any]) -> str:
    return json.dumps({"header": {"action": action, "task_id": task_id, "streaming": "duplex"}, "payload": payload})


def _parameters(options: ListenOptions) -> dict[str, Any]:
    params: dict[str, Any] = {"format": "pcm", "sample_rate": SAMPLE_RATE, "heartbeat": True}  # silence is fine
    if options.language:
        params["language_hints"] = [options.language]
    if options.vocabulary_id:
        params["vocabulary_id"] = options.vocabulary_id
    if options.diarization:
        params["diarization_enabled"] = True
    if options.max_sentence_silence:
        params["max_sentence_silence"] = options.max_sentence_silence
    return params


def _clock(ms: int) -> str:
    minutes, rest = divmod(max(0, ms), 60_000)
    return f"{minutes:02d}:{rest / 1000:04.1f}"


def caption_line(caption: Caption) -> Text:
    line = Text(f"[{_clock(caption.begin_time)} → {_clock(caption.end_time)}] ", style="dim")
    if caption.speaker_id is not None:
        line.append(f"S{caption.speaker_id + 1}: ", style="bold cyan")
    line.append(caption.text)
    return line


class Session:
    """One run-task over one connection: a sender thread streams frames, the caller's thread reads events."""

    def __init__(self, options: ListenOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.task_id = uuid.uuid4().hex
        self.captions: list[Caption] = []
        self._interim = Text("")
        self._send_error: BaseException | None = None
        self._finish_sent_at = 0.0

    def _open(self) -> ClientConnection:
        url = inference_url(self.options.server)
        headers = {"Authorization": f"Bearer {self.options.api_key}"} if self.options.api_key else None
        try:
            return connect(url, additional_headers=headers, open_timeout=10, max_size=2**22)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise ListenError(
                    f"the server refused the API key (HTTP {status}): pass --api-key or set DASHSCOPE_API_KEY"
                ) from exc
            raise ListenError(f"the server refused the connection (HTTP {status}) at {url}") from exc
        except (OSError, TimeoutError) as exc:
            raise ListenError(f"cannot connect to {url}: {exc}") from exc

    def _send_audio(self, ws: ClientConnection, frames: Iterator[bytes]) -> None:
        try:
            for frame in frames:
                ws.send(frame)
            ws.send(_command("finish-task", self.task_id, {"input": {}}))
            self._finish_sent_at = time.monotonic()
        except ConnectionClosed:
            pass
        except BaseException as exc:
            self._send_error = exc
            with contextlib.suppress(Exception):
                ws.send(_command("finish-task", self.task_id, {"input": {}}))

    def run(self, frames: Callable[[], Iterator[bytes]], stop: threading.Event | None = None) -> list[Caption]:
        """Stream until the frames end (or Ctrl-C sets ``stop``), then collect the remaining finals."""
        ws = self._open()
        with ws:
            run_task = {
                "task_group": "audio",
                "task": "asr",
                "function": "recognition",
                "model": self.options.model,
                "parameters": _parameters(self.options),
                "input": {},
            }
            ws.send(_command("run-task", self.task_id, run_task))
            self._check_failed(json.loads(ws.recv(timeout=30)))
            started = time.monotonic()
            sender = threading.Thread(target=self._send_audio, args=(ws, frames()), daemon=True)
            sender.start()
            with Live(self._interim, console=self.console, refresh_per_second=10, transient=True) as live:
                while True:
                    try:
                        self._read_events(ws, live, started)
                        break
                    except KeyboardInterrupt:
                        if stop is None or stop.is_set():
                            raise
                        stop.set()  # the sender finishes the task; the last finals still arrive
            sender.join(timeout=5)
        if isinstance(self._send_error, ListenError):
            raise self._send_error
        if self._send_error is not None:
            raise ListenError(f"streaming stopped: {self._send_error}")
        return self.captions

    def _read_events(self, ws: ClientConnection, live: Live, started: float) -> None:
        while True:
            try:
                raw = ws.recv(timeout=1.0)
            except TimeoutError:
                waited = self._finish_sent_at and time.monotonic() - self._finish_sent_at
                if waited and waited > FINISH_TIMEOUT_S:
                    raise ListenError(
                        f"the server did not finish the task within {FINISH_TIMEOUT_S:g} s of the end of the audio"
                    ) from None
                continue
            except ConnectionClosed as exc:
                raise ListenError(f"the server closed the connection ({exc.rcvd or 'no close frame'})") from exc
            event = json.loads(raw)
            self._check_failed(event)
            name = event["header"]["event"]
            if name == "task-finished":
                return
            if name == "result-generated":
                self._on_result(event["payload"]["output"]["sentence"], live, time.monotonic() - started)

    def _check_failed(self, event: dict[str, Any]) -> None:
        header = event.get("header", {})
        if header.get("event") == "task-failed":
            code = header.get("error_code", "error")
            message = header.get("error_message", "")
            if code.startswith("Throttling"):
                message += " (the server is at capacity; try again shortly)"
            raise ListenError(f"{code}: {message}")

    def _on_result(self, sentence: dict[str, Any], live: Live, elapsed: float) -> None:
        if sentence.get("heartbeat"):
            return
        if sentence.get("end_time") is None:
            self._interim.plain = sentence.get("text", "")
            self._interim.stylize("italic dim")
            live.refresh()
            return
        caption = Caption(
            sentence_id=int(sentence.get("sentence_id", len(self.captions) + 1)),
            begin_time=int(sentence["begin_time"]),
            end_time=int(sentence["end_time"]),
            text=str(sentence.get("text", "")),
            words=list(sentence.get("words") or []),
            speaker_id=sentence.get("speaker_id"),
            received_s=round(elapsed, 3),
        )
        self.captions.append(caption)
        self._interim.plain = ""
        live.console.print(caption_line(caption))
        live.refresh()


# -- output ------------------------------------------------------------------------------------------
def write_output(path: Path, captions: list[Caption], source: str) -> None:
    """``.srt``, ``.vtt``, ``.txt`` or ``.json`` (the transcript result shape) by the file's suffix."""
    from voxgate.output.subtitles import to_srt, to_vtt

    sentences = [c.as_sentence() for c in captions]
    suffix = path.suffix.lower()
    if suffix == ".srt":
        text = to_srt(sentences)
    elif suffix == ".vtt":
        text = to_vtt(sentences)
    elif suffix == ".txt":
        text = "".join(s.text + "\n" for s in sentences)
    elif suffix == ".json":
        body = {
            "file_url": source,
            "transcripts": [
                {
                    "channel_id": 0,
                    "text": " ".join(s.text for s in sentences),
                    "sentences": [
                        {
                            "sentence_id": c.sentence_id,
                            "begin_time": c.begin_time,
                            "end_time": c.end_time,
                            "text": c.text,
                            "words": c.words,
                            **({"speaker_id": c.speaker_id} if c.speaker_id is not None else {}),
                        }
                        for c in captions
                    ],
                }
            ],
        }
        text = json.dumps(body, ensure_ascii=False, indent=2) + "\n"
    else:
        raise ListenError(f"--output must end in .srt, .vtt, .txt or .json (got '{path.name}')")
    path.write_text(text, encoding="utf-8")


def listen(
    options: ListenOptions,
    file: Path | None,
    console: Console,
    *,
    speed: float = 1.0,
    device: str | None = None,
) -> list[Caption]:
    """Stream ``file`` (or the microphone until Ctrl-C) and return the final captions."""
    session = Session(options, console)
    stop = threading.Event()  # Ctrl-C sets it: streaming stops, the last sentence still arrives
    if file is not None:
        if not file.is_file():
            raise ListenError(f"no such file: {file}")
        return session.run(lambda: file_frames(file, speed, stop), stop)
    microphone = microphone_frames(stop, device)
    try:
        first = next(microphone)  # fails here, before connecting, when there is no input device
    except StopIteration:
        raise ListenError("the audio input produced no data") from None

    def frames() -> Iterator[bytes]:
        yield first
        yield from microphone

    console.print("[dim]listening on the microphone; Ctrl-C to stop[/dim]", highlight=False)
    return session.run(frames, stop)
