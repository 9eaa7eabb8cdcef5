"""Asynchronous file transcription end to end: real server, real engine, the official dashscope SDK."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dashscope
import httpx
import pytest
from dashscope.audio.asr import Transcription
from dashscope.audio.qwen_asr import QwenTranscription

from tests.conftest import API_KEY, RunningServer, audio_file, join_wavs, start_server, stop_server, synth, wer

REFERENCE = {"goforward.wav": "go forward ten meters", "something.wav": "go somewhere and do something"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SUBMIT = "/api/v1/services/audio/asr/transcription"


def _file_url(name: str) -> str:
    return audio_file(name).as_uri()


def _legacy(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashscope, "base_http_api_url", server.url + "/api/v1")
    monkeypatch.setattr(dashscope, "api_key", API_KEY)


def _result(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=10)  # plain GET, no API key, as the SDK examples do
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def _submit(server: RunningServer, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        server.url + SUBMIT, json=body, headers={**AUTH, "X-DashScope-Async": "enable", **(headers or {})}, timeout=10
    )


def _wait(server: RunningServer, task_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = httpx.get(f"{server.url}/api/v1/tasks/{task_id}", headers=AUTH, timeout=10).json()
        if body["output"]["task_status"] not in ("PENDING", "RUNNING"):
            return body
        time.sleep(0.3)
    raise AssertionError(f"task {task_id} did not finish")


def test_legacy_transcription_with_a_failing_file(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _legacy(server, monkeypatch)
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is text, not audio\n" * 50)
    missing = (tmp_path / "missing.wav").as_uri()
    urls = [_file_url("goforward.wav"), _file_url("something.wav"), not_audio.as_uri(), missing]
    submitted = Transcription.async_call(model="fun-asr", file_urls=urls, language_hints=["en"])
    assert submitted.status_code == 200, submitted.message
    assert submitted.output.task_status == "PENDING"
    done = Transcription.wait(task=submitted.output.task_id)
    assert done.status_code == 200
    output = done.output
    assert output.task_status == "SUCCEEDED"
    assert output["task_metrics"] == {"TOTAL": 4, "SUCCEEDED": 2, "FAILED": 2}
    assert done.usage["duration"] >= 5
    by_url = {r["file_url"]: r for r in output["results"]}
    for name, reference in REFERENCE.items():
        item = by_url[_file_url(name)]
        assert item["subtask_status"] == "SUCCEEDED"
        result = _result(item["transcription_url"])
        assert result["file_url"] == _file_url(name)
        assert result["properties"]["original_sampling_rate"] == 16000
        transcript = result["transcripts"][0]
        assert wer(reference, transcript["text"]) <= 0.25, transcript["text"]
        first = transcript["sentences"][0]
        assert first["sentence_id"] == 1 and first["words"] and first["end_time"] > first["begin_time"]
    assert by_url[not_audio.as_uri()]["subtask_status"] == "FAILED"
    assert by_url[not_audio.as_uri()]["code"] == "InvalidFile.DecodeFailed"
    assert by_url[missing]["code"] == "InvalidFile.DownloadFailed" and "does not exist" in by_url[missing]["message"]

    fetched = Transcription.fetch(task=submitted.output.task_id)
    assert fetched.output.task_status == "SUCCEEDED"
    # The result URL is public but unguessable; a guessed name is a DashScope-shaped 404.
    url = by_url[_file_url("goforward.wav")]["transcription_url"]
    assert len(url.rsplit("/", 1)[1]) >= 32
    guessed = httpx.get(server.url + "/api/v1/results/" + "A" * 32 + ".json")
    assert guessed.status_code == 404 and guessed.json()["code"] == "ResultNotFound"


def test_qwen_filetrans_answers_in_its_own_shape(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _legacy(server, monkeypatch)
    response = QwenTranscription.call(
        model="qwen3-asr-flash-filetrans", file_url=_file_url("something.wav"), language="en", enable_words=False
    )
    assert response.status_code == 200, response.message
    assert response.output.task_status == "SUCCEEDED"
    assert response.usage["seconds"] == 3
    result = _result(response.output["result"]["transcription_url"])
    assert result["audio_info"]["sample_rate"] == 16000
    sentences = result["transcripts"][0]["sentences"]
    assert sentences[0]["sentence_id"] == 0 and "words" not in sentences[0]
    assert wer(REFERENCE["something.wav"], result["transcripts"][0]["text"]) <= 0.25


def test_v2_client_jobs_and_listing(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    client = dashscope.Client(base_url=server.url + "/api/v1", api_key=API_KEY)
    job = client.audio.asr.jobs.create(
        model="paraformer-v2", file_urls=[_file_url("goforward.wav")], parameters={"channel_id": [0]}
    )
    assert job.status == "PENDING" and job.task_id
    finished = client.audio.asr.jobs.wait(job, poll_interval=0.3)
    assert finished.succeeded
    text = _result(finished.results[0].transcription_url or "")["transcripts"][0]["text"]
    assert wer(REFERENCE["goforward.wav"], text) <= 0.25
    assert client.audio.asr.jobs.fetch("no-such-task").status == "UNKNOWN"
    _legacy(server, monkeypatch)
    listed = Transcription.list(model_name="paraformer-v2", page_size=100)
    assert listed.status_code == 200
    tasks = listed.output["tasks"]
    assert job.task_id in [t["task_id"] for t in tasks] and listed.output["total"] >= 1
    assert {t["model_name"] for t in tasks} == {"paraformer-v2"}


def test_task_fails_when_every_file_fails(server: RunningServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"\x00" * 4096)
    submitted = _submit(server, {"model": "fun-asr", "input": {"file_urls": [bad.as_uri(), bad.as_uri()]}})
    assert submitted.status_code == 200
    body = _wait(server, submitted.json()["output"]["task_id"])
    output = body["output"]
    assert output["task_status"] == "FAILED"
    assert output["code"] == "InvalidFile.DecodeFailed" and "all 2 files failed" in output["message"]
    assert [r["subtask_status"] for r in output["results"]] == ["FAILED", "FAILED"]
    client = dashscope.Client(base_url=server.url + "/api/v1", api_key=API_KEY)
    with pytest.raises(Exception, match=r"InvalidFile\.DecodeFailed|all 2 files failed"):
        client.audio.asr.jobs.fetch(output["task_id"])


def test_unknown_task_id_is_unknown(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    response = httpx.get(server.url + "/api/v1/tasks/8fab76d0-0000-0000-0000-000000000000", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["output"] == {"task_id": "8fab76d0-0000-0000-0000-000000000000", "task_status": "UNKNOWN"}
    _legacy(server, monkeypatch)
    assert Transcription.wait(task="nope").output.task_status == "UNKNOWN"


def test_private_and_metadata_urls_refused_by_default(server: RunningServer) -> None:
    urls = [
        f"http://127.0.0.1:{server.port}/health",
        "http://10.0.0.1/a.wav",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:1/a.wav",
    ]
    submitted = _submit(server, {"model": "fun-asr", "input": {"file_urls": urls}})
    output = _wait(server, submitted.json()["output"]["task_id"], timeout=30)["output"]
    assert output["task_status"] == "FAILED"
    assert [r["code"] for r in output["results"]] == ["InvalidFile.URLNotAllowed"] * 4
    assert "169.254.169.254" in output["results"][2]["message"]


def test_missing_or_wrong_key_is_401(server: RunningServer) -> None:
    body = {"model": "fun-asr", "input": {"file_urls": [_file_url("goforward.wav")]}}
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "Basic abc"}):
        for response in (
            httpx.post(server.url + SUBMIT, json=body, headers=headers),
            httpx.get(server.url + "/api/v1/tasks/x", headers=headers),
        ):
            assert response.status_code == 401
            payload = response.json()
            assert payload["code"] == "InvalidApiKey" and payload["message"] and payload["request_id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{not json", "JSON"),
        ("[1, 2]", "JSON object"),
        ({"input": {"file_urls": ["https://example.com/a.wav"]}}, "model"),
        ({"model": 5, "input": {"file_urls": ["https://example.com/a.wav"]}}, "model"),
        ({"model": "fun-asr"}, "input"),
        ({"model": "fun-asr", "input": {}}, "input.file_urls"),
        ({"model": "fun-asr", "input": {"file_urls": "https://example.com/a.wav"}}, "input.file_urls"),
        ({"model": "fun-asr", "input": {"file_urls": ["https://example.com/a.wav", 7]}}, "input.file_urls[1]"),
        ({"model": "fun-asr", "input": {"file_urls": ["ftp://example.com/a.wav"]}}, "input.file_urls[0]"),
        ({"model": "fun-asr", "input": {"file_urls": ["https://x/a.wav"] * 101}}, "input.file_urls"),
        ({"model": "qwen3-asr-flash-filetrans", "input": {"file_url": 3}}, "input.file_url"),
        ({"model": "fun-asr", "input": {"file_urls": ["https://x/a.wav"]}, "parameters": []}, "parameters"),
        (
            {"model": "fun-asr", "input": {"file_urls": ["https://x/a.wav"]}, "parameters": {"channel_id": "0"}},
            "parameters.channel_id",
        ),
        (
            {"model": "fun-asr", "input": {"file_urls": ["https://x/a.wav"]}, "parameters": {"enable_words": "no"}},
            "parameters.enable_words",
        ),
        (
            {
                "model": "fun-asr",
                "input": {"file_urls": ["https://x/a.wav"]},
                "parameters": {"diarization_enabled": True, "speaker_count": "2"},
            },
            "parameters.speaker_count",
        ),
        (
            {"model": "fun-asr", "input": {"file_urls": ["https://x/a.wav"]}, "parameters": {"language_hints": "en"}},
            "parameters.language_hints",
        ),
        (
            {"model": "fun-asr", "input": {"file_urls": ["https://x/a.wav"]}, "parameters": {"vocabulary_id": 12}},
            "parameters.vocabulary_id",
        ),
        (
            {
                "model": "fun-asr",
                "input": {"file_urls": ["https://x/a.wav"]},
                "parameters": {"vocabulary_id": "vocab-nope-0"},
            },
            "vocabulary_id",
        ),
    ],
)
def test_bad_requests_name_the_field(server: RunningServer, body: Any, field: str) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    time.sleep(0.15)  # stay under the shared server's submit rate limit (10/s)
    response = httpx.post(server.url + SUBMIT, content=content, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["code"] == "InvalidParameter"
    assert field in payload["message"]


def test_unknown_model_is_model_not_exist(server: RunningServer) -> None:
    response = _submit(server, {"model": "whisper-9000", "input": {"file_urls": ["https://x/a.wav"]}})
    assert response.status_code == 404 and response.json()["code"] == "Model.NotExist"


def test_expired_results_are_deleted_and_forgotten(tmp_path: Path) -> None:
    """Store-level: the janitor removes result files past retention and the task becomes UNKNOWN."""
    from voxgate.config import Settings
    from voxgate.jobs.executor import JobExecutor
    from voxgate.jobs.store import SUCCEEDED, JobStore

    settings = Settings(data_dir=tmp_path, result_retention_hours=1)
    store = JobStore(settings.resolved_database_url())
    executor = JobExecutor(store, SimpleNamespace(settings=settings))  # type: ignore[arg-type]
    store.create_task("t1", owner="o", model="fun-asr", family="fun-asr", parameters={}, file_urls=["https://x/a"])
    result = tmp_path / "r.json"
    result.write_text("{}")
    now = time.time()
    store.finish_file("t1", 0, status=SUCCEEDED, duration_ms=1000, result=("tok", str(result), now + 3600))
    store.finish_task("t1", status=SUCCEEDED)
    assert executor.cleanup(now) == 0 and store.result_path("tok", now) == str(result)
    assert executor.cleanup(now + 3601) == 1
    assert not result.exists() and store.result_path("tok") is None and store.get_task("t1") is None


# -- dedicated servers ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def audio_http() -> Iterator[str]:
    """The test recordings over plain HTTP on a loopback port."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(audio_file("goforward.wav").parent))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_http_urls_and_submit_rate_limit(tmp_path: Path, audio_http: str) -> None:
    server = start_server(tmp_path / "private", {"VOXGATE_FETCH_ALLOW_PRIVATE": "1", "VOXGATE_SUBMIT_RPS": "0.2"})
    try:
        body = {
            "model": "fun-asr",
            "input": {"file_urls": [f"{audio_http}/something.wav", f"{audio_http}/missing.wav"]},
        }
        first = _submit(server, body)
        assert first.status_code == 200
        second = _submit(server, body)
        assert second.status_code == 429
        assert second.json()["code"] == "Throttling" and second.json()["request_id"]
        output = _wait(server, first.json()["output"]["task_id"])["output"]
        assert output["task_status"] == "SUCCEEDED"
        good, missing = output["results"]
        assert wer(REFERENCE["something.wav"], _result(good["transcription_url"])["transcripts"][0]["text"]) <= 0.25
        assert missing["code"] == "InvalidFile.DownloadFailed" and "404" in missing["message"]
    finally:
        stop_server(server)


PARAGRAPHS = (
    "The museum opens at nine in the morning and closes at six in the evening. Visitors can buy tickets "
    "at the front desk or online. The third floor has a large collection of old maps and paintings of "
    "ships that sailed across the northern sea.",
    "Our train leaves the station every twenty minutes. Please keep your bags close and stand behind the "
    "yellow line. The next stop is the central market, where you can change to the blue line for the airport.",
    "Fresh bread, green apples and a bottle of milk were on the kitchen table. My sister wanted to bake a "
    "cake for the party, so we walked to the shop on the corner to buy sugar, eggs and butter.",
    "The old lighthouse on the hill was painted white last summer. At night its lamp turns slowly, and "
    "fishing boats use the light to find the harbour when the fog rolls in from the sea.",
)


def _long_speech(out: Path) -> tuple[Path, str]:
    """About a minute of speech: the two real clips and synthesized paragraphs, joined."""
    parts: list[Path] = [audio_file("goforward.wav")]
    for i, text in enumerate(PARAGRAPHS):
        parts.append(synth(text, out.parent / f"paragraph{i}.wav"))
    parts.append(audio_file("something.wav"))
    join_wavs(parts, out)
    reference = " ".join([REFERENCE["goforward.wav"], *PARAGRAPHS, REFERENCE["something.wav"]])
    return out, reference


def test_running_job_survives_sigkill(tmp_path: Path) -> None:
    long_file, reference = _long_speech(tmp_path / "long.wav")
    data_dir = tmp_path / "durable"
    server = start_server(data_dir)
    try:
        submitted = _submit(
            server,
            {
                "model": "fun-asr",
                "input": {"file_urls": [long_file.as_uri()]},
                "parameters": {"language_hints": ["en"]},
            },
        )
        task_id = submitted.json()["output"]["task_id"]
        deadline = time.monotonic() + 60
        status = "PENDING"
        while status == "PENDING" and time.monotonic() < deadline:
            status = httpx.get(f"{server.url}/api/v1/tasks/{task_id}", headers=AUTH).json()["output"]["task_status"]
            time.sleep(0.05)
        assert status == "RUNNING"
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    finally:
        stop_server(server)

    restarted = start_server(data_dir)
    try:
        # A second task waits behind the resumed one and can be canceled while PENDING.
        extra = _submit(restarted, {"model": "fun-asr", "input": {"file_urls": [long_file.as_uri()]}})
        extra_id = extra.json()["output"]["task_id"]
        canceled = httpx.post(f"{restarted.url}/api/v1/tasks/{extra_id}/cancel", headers=AUTH).json()
        assert canceled["output"]["task_status"] == "CANCELED"

        output = _wait(restarted, task_id, timeout=240)["output"]
        assert output["task_status"] == "SUCCEEDED", output
        text = _result(output["results"][0]["transcription_url"])["transcripts"][0]["text"]
        assert wer(reference, text) <= 0.25, text
        assert "resuming 1 interrupted file job" in restarted.log()
        assert _wait(restarted, extra_id)["output"]["task_status"] == "CANCELED"
        again = httpx.post(f"{restarted.url}/api/v1/tasks/{task_id}/cancel", headers=AUTH)
        assert again.status_code == 400 and "already SUCCEEDED" in again.json()["message"]
    finally:
        stop_server(restarted)
