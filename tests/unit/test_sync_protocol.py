"""Protocol logic of the synchronous endpoints: data URIs, upload keys and policies, streamed pieces."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from starlette.requests import Request

from voxgate.api.audio_source import (
    MultipartForm,
    PayloadTooLarge,
    decode_data_uri,
    read_multipart,
    temp_destination,
    wrap_raw_pcm,
)
from voxgate.api.dashscope import generation
from voxgate.api.dashscope.uploads import check_policy, make_policy
from voxgate.api.sync_recognition import (
    ClipResult,
    StreamStep,
    block_bounds,
    stream_steps,
)
from voxgate.audio.decode import decode_channel
from voxgate.config import Settings
from voxgate.engine.catalog import Catalog
from voxgate.engine.scheduler import ThreadPlan
from voxgate.engine.types import RecognitionOptions, Sentence
from voxgate.errors import AudioError, InvalidParameter, Throttling, UploadDenied
from voxgate.jobs.store import JobStore
from voxgate.sync_gate import SyncGate
from voxgate.uploads import UploadSigner, key_path, owns, resolve_oss


def test_data_uri_accepts_audio_and_refuses_everything_else() -> None:
    assert decode_data_uri("data:audio/wav;base64,UklGRg==", param="a") == b"RIFF"
    assert decode_data_uri("data:;base64,UklGRg==", param="a") == b"RIFF"
    with pytest.raises(AudioError, match="not audio"):
        decode_data_uri("data:image/png;base64,UklGRg==", param="a")
    with pytest.raises(InvalidParameter, match="base64"):
        decode_data_uri("data:audio/wav,RIFF", param="a")
    with pytest.raises(InvalidParameter, match="not valid base64"):
        decode_data_uri("data:audio/wav;base64,U*lGRg==", param="a")
    with pytest.raises(PayloadTooLarge, match="the limit is"):
        decode_data_uri("data:audio/wav;base64," + "A" * 200, param="a", max_chars=105)


def test_raw_pcm_wrapped_as_wav_decodes_to_the_same_samples() -> None:
    samples = (np.sin(np.arange(16000) / 10) * 10000).astype("<i2")
    decoded = decode_channel(wrap_raw_pcm(samples.tobytes(), 16000))
    assert decoded.shape == (16000,)
    assert np.allclose(decoded, samples / 32768.0, atol=1e-4)


def test_upload_keys_stay_inside_the_uploads_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert key_path(settings, "dashscope-instant/abc/a b.wav") == tmp_path / "uploads/dashscope-instant/abc/a b.wav"
    for bad in ("../x", "a/../../x", "/etc/passwd", "a//b", "a\\b", "a/./b", "a\x00b", ""):
        with pytest.raises(InvalidParameter):
            key_path(settings, bad)
    stored = tmp_path / "uploads/dashscope-instant/abc/a b.wav"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"x")
    assert resolve_oss(settings, "oss://dashscope-instant/abc/a b.wav") == stored
    assert resolve_oss(settings, "oss://dashscope-instant/abc/a%20b.wav") == stored
    with pytest.raises(InvalidParameter, match="does not exist"):
        resolve_oss(settings, "oss://dashscope-instant/abc/missing.wav")
    with pytest.raises(InvalidParameter):
        resolve_oss(settings, "oss://../../etc/passwd")
    assert owns("oss://dashscope-instant/abc/a b.wav", "abc") and not owns("oss://dashscope-instant/abc/a", "ab")
    assert resolve_oss(settings, "oss://dashscope-instant/abc/a b.wav", owner="abc") == stored
    with pytest.raises(InvalidParameter, match="does not exist"):  # another key's upload looks missing
        resolve_oss(settings, "oss://dashscope-instant/abc/a b.wav", owner="xyz")


def _form(**fields: str) -> MultipartForm:
    return MultipartForm(fields={k: [v] for k, v in fields.items()})


def test_upload_policy_signature_and_prefix(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    database = f"sqlite:///{tmp_path / 'jobs.db'}"
    signer = UploadSigner.from_store(JobStore(database))
    services: Any = SimpleNamespace(settings=settings, signer=lambda: signer)
    policy = make_policy(services, "http://host/api/v1/uploads", "owner1")
    assert policy["upload_dir"].startswith("dashscope-instant/owner1/")
    key = policy["upload_dir"] + "/a.wav"
    assert check_policy(services, _form(policy=policy["policy"], Signature=policy["signature"], key=key)) == key
    with pytest.raises(UploadDenied, match="signature"):
        check_policy(services, _form(policy=policy["policy"], Signature="x", key=key))
    with pytest.raises(UploadDenied, match="upload_dir"):
        check_policy(services, _form(policy=policy["policy"], Signature=policy["signature"], key="elsewhere/a"))
    document = json.loads(base64.b64decode(policy["policy"]))
    document["conditions"][0][2] = "dashscope-instant/"
    forged = base64.b64encode(json.dumps(document).encode()).decode()
    with pytest.raises(UploadDenied):
        check_policy(services, _form(policy=forged, Signature=policy["signature"], key="dashscope-instant/x/a"))
    # another process on the same job database shares the signing key
    other_signer = UploadSigner.from_store(JobStore(database))
    other: Any = SimpleNamespace(settings=settings, signer=lambda: other_signer)
    assert check_policy(other, _form(policy=policy["policy"], Signature=policy["signature"], key=key)) == key


def _request(body: bytes, boundary: str) -> Request:
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    headers = [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())]
    return Request({"type": "http", "method": "POST", "headers": headers, "path": "/"}, receive)


def _multipart(boundary: str, fields: dict[str, str], file: bytes) -> bytes:
    out = b""
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    out += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()
    return out + file + f"\r\n--{boundary}--\r\n".encode()


def test_multipart_reader_streams_the_file_and_enforces_the_cap(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    payload = bytes(range(256)) * 40
    body = _multipart("XyZ", {"model": "whisper-1", "timestamp_granularities[]": "word"}, payload)
    form = asyncio.run(
        read_multipart(_request(body, "XyZ"), destination=temp_destination(settings), max_file_bytes=20_000)
    )
    assert form.get("model") == "whisper-1" and form.all("timestamp_granularities[]") == ["word"]
    assert form.file_path is not None and form.file_path.read_bytes() == payload and form.file_name == "a.wav"
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_multipart(_request(body, "XyZ"), destination=temp_destination(settings), max_file_bytes=5000))
    assert list((tmp_path / "tmp").iterdir()) == [form.file_path], "the partial file was removed"


def _result(texts: list[str], language: str) -> ClipResult:
    sentences = [Sentence(begin_time=i * 1000, end_time=i * 1000 + 900, text=t) for i, t in enumerate(texts)]
    return ClipResult(sentences=sentences, language=language, duration_ms=len(texts) * 1000)


def test_streamed_pieces_incremental_and_cumulative() -> None:
    english = _result(["Go forward.", "Stop now."], "en")
    assert english.pieces(incremental=True) == ["Go forward.", " Stop now."]
    assert english.pieces(incremental=False) == ["Go forward.", "Go forward. Stop now."]
    chinese = _result(["你好。", "再见。"], "zh")
    assert "".join(chinese.pieces(incremental=True)) == chinese.text == "你好。再见。"
    assert _result([], "en").pieces(incremental=True) == [""]
    assert chinese.token_estimate() == 6 and english.token_estimate() == 4


class FakeClipRecognizer:
    """A fake engine for protocol tests: returns scripted sentences per block, keyed by block offset."""

    plan = ThreadPlan(1, 1)

    def __init__(self, script: dict[int, list[str]]) -> None:
        self.script = script
        self.calls: list[tuple[int, int, str | None]] = []

    def transcribe_clip(
        self, audio: np.ndarray, options: RecognitionOptions, profile: object, *, offset_ms: int, language: str | None
    ) -> tuple[list[Sentence], str | None]:
        self.calls.append((offset_ms, audio.shape[0], language))
        texts = self.script.get(len(self.calls) - 1, [])
        sentences = [Sentence(offset_ms + i * 100, offset_ms + i * 100 + 50, t) for i, t in enumerate(texts)]
        return sentences, "en" if texts else None


def _fake_services(script: dict[int, list[str]]) -> Any:
    return SimpleNamespace(settings=Settings(), recognizer=FakeClipRecognizer(script), sync_gate=SyncGate(1, 16))


def _steps(services: Any, seconds: float, incremental: bool) -> list[StreamStep]:
    audio = np.zeros(int(seconds * 16000), dtype=np.float32)

    async def collect() -> list[StreamStep]:
        return [
            step
            async for step in stream_steps(services, audio, RecognitionOptions(), None, incremental=incremental)  # type: ignore[arg-type]
        ]

    return asyncio.run(collect())


def test_long_audio_is_cut_into_blocks_at_the_quietest_point() -> None:
    assert block_bounds(np.zeros(16000 * 70, dtype=np.float32)) == [(0, 16000 * 70)]
    loud = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 150).astype(np.float32)
    loud[16000 * 55 : 16000 * 56] = 0.0  # a quiet second inside the first search window
    bounds = block_bounds(loud)
    assert bounds[0] == (0, 16000 * 55 + 800) or 16000 * 55 <= bounds[0][1] <= 16000 * 56
    assert [b[0] for b in bounds[1:]] == [b[1] for b in bounds[:-1]] and bounds[-1][1] == loud.shape[0]
    assert all(end - start <= 16000 * 70 for start, end in bounds[:-1])


def test_stream_steps_send_sentences_block_by_block() -> None:
    services = _fake_services({0: ["Go forward."], 1: ["Stop now.", "Turn left."]})
    steps = _steps(services, 110, incremental=True)  # two blocks
    assert [s.piece for s in steps] == ["Go forward.", " Stop now.", " Turn left."]
    assert [s.final for s in steps] == [False, False, True]
    assert steps[-1].result.text == "Go forward. Stop now. Turn left."
    calls = services.recognizer.calls
    assert len(calls) == 2 and calls[0][2] is None and calls[1][2] == "en", "language kept after the first block"
    assert calls[1][0] == round(calls[0][1] / 16), "offsets in audio time"
    # three blocks, the last without speech: a closing step carries the final flag
    cumulative = _steps(_fake_services({0: ["Go forward."], 1: ["Stop now."]}), 150, incremental=False)
    assert [s.piece for s in cumulative][:2] == ["Go forward.", "Go forward. Stop now."]
    assert cumulative[-1].final and cumulative[-1].index is None and cumulative[-1].piece == "Go forward. Stop now."
    silent = _steps(_fake_services({}), 5, incremental=True)
    assert [(s.piece, s.final, s.index) for s in silent] == [("", True, None)]


def test_generation_events_follow_the_dialect() -> None:
    catalog = Catalog()
    result = _result(["Go forward.", "Stop now."], "en")

    def call(model: str, incremental: bool) -> generation.GenerationCall:
        return generation.GenerationCall(
            catalog.resolve(model), "data:", "audio", RecognitionOptions(), None, None, incremental
        )

    first, last = StreamStep(result, 0, "Go forward.", False), StreamStep(result, 1, " Stop now.", True)
    events = [generation.render_step(call("qwen3-asr-flash", True), step, "rid") for step in (first, last)]
    assert [e["output"]["choices"][0]["message"]["content"][0]["text"] for e in events] == [
        "Go forward.",
        " Stop now.",
    ]
    assert [e["output"]["choices"][0]["finish_reason"] for e in events] == ["null", "stop"]
    assert "annotations" in events[-1]["output"]["choices"][0]["message"]
    assert "annotations" not in events[0]["output"]["choices"][0]["message"]
    text_event = generation.render_step(call("fun-asr-flash", False), last, "rid")
    assert text_event["output"]["sentence"]["sentence_id"] == 2 and text_event["output"]["finished"] is True
    framed = generation.sse_event(3, events[0])
    assert framed.startswith("id:3\nevent:result\ndata:{") and framed.endswith("}\n\n")


def test_sync_gate_bounds_running_and_waiting_requests() -> None:
    async def scenario() -> list[str]:
        gate = SyncGate(concurrency=1, queue_limit=1)
        release = asyncio.Event()
        order: list[str] = []

        async def request(name: str) -> None:
            async with gate.slot():
                order.append(name)
                await release.wait()

        first = asyncio.create_task(request("first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(request("second"))
        await asyncio.sleep(0)
        with pytest.raises(Throttling):
            gate.check()
        release.set()
        await asyncio.gather(first, second)
        gate.check()
        return order

    assert asyncio.run(scenario()) == ["first", "second"]


def test_sync_gate_holds_the_turn_until_the_thread_ends() -> None:
    async def scenario() -> list[str]:
        gate = SyncGate(concurrency=1, queue_limit=4)
        started, finish = threading.Event(), threading.Event()
        order: list[str] = []

        def slow() -> str:
            started.set()
            finish.wait(5)
            order.append("slow done")
            return "slow"

        caller = asyncio.create_task(gate.run(slow))
        await asyncio.to_thread(started.wait, 5)
        caller.cancel()  # the client went away; the thread still runs
        await asyncio.sleep(0.05)
        follower = asyncio.create_task(gate.run(lambda: order.append("next") or "next"))
        await asyncio.sleep(0.05)
        assert order == [], "the next call waits for the cancelled call's thread"
        finish.set()
        assert await follower == "next"
        return order

    assert asyncio.run(scenario()) == ["slow done", "next"]
