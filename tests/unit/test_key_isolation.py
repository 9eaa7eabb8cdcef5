"""Per-key isolation through the HTTP API: key B cannot read, cancel, list or use key A's tasks, uploads or
vocabularies. Protocol logic only: the app runs in-process with a fake recognizer (the real engine is covered
by tests/integration)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from voxgate.api.auth import RateLimiter
from voxgate.app import create_app
from voxgate.config import Settings
from voxgate.engine.catalog import Catalog
from voxgate.engine.types import AudioInfo, FileResult, Sentence, Transcript
from voxgate.jobs.store import JobStore
from voxgate.services import Services

KEY_A, KEY_B = "sk-key-a", "sk-key-b"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}
SUBMIT = "/api/v1/services/audio/asr/transcription"
CUSTOMIZATION = "/api/v1/services/audio/asr/customization"
GENERATION = "/api/v1/services/aigc/multimodal-generation/generation"


class FakeRecognizer:
    """Answers every file with one fixed sentence; records the hotwords it was given."""

    def __init__(self) -> None:
        self.hotwords: list[list[str]] = []
        self.block = False  # hold each file until ``release`` is set
        self.started = threading.Event()
        self.release = threading.Event()
        self.scheduler = SimpleNamespace(observer=None)  # the app hooks its queue-wait metric here

    def warm_up(self, names: Any) -> None:
        return None

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def model(self, name: str) -> None:
        return None

    def transcribe_file(self, source: Path, options: Any, profile: Any, **kwargs: Any) -> FileResult:
        self.hotwords.append([h.text for h in options.hotwords])
        if self.block:
            self.started.set()
            self.release.wait(30)
        transcript = Transcript(0, [Sentence(0, 1000, "hello")], "en", 1000, 800)
        return FileResult(AudioInfo("wav", "pcm_s16le", 16000, 1, 1000), [transcript])


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data",
        api_keys=f"{KEY_A},{KEY_B}",
        fetch_allow_file=True,
        submit_rps=0,
        query_rps=0,
        public_url="http://testserver",
    )
    services = Services(settings=settings, catalog=Catalog(), recognizer=FakeRecognizer(), rate_limiter=RateLimiter())  # type: ignore[arg-type]
    with TestClient(create_app(settings, services)) as test_client:
        yield test_client


def _audio(tmp_path: Path) -> str:
    path = tmp_path / "clip.wav"
    path.write_bytes(b"RIFF0000WAVE")
    return path.as_uri()


def _submit(client: TestClient, headers: dict[str, str], **input_: Any) -> Any:
    return client.post(SUBMIT, json={"model": "fun-asr", "input": input_}, headers=headers)


def _wait(client: TestClient, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        output: dict[str, Any] = client.get(f"/api/v1/tasks/{task_id}", headers=A).json()["output"]
        if output["task_status"] in ("SUCCEEDED", "FAILED", "CANCELED"):
            return output
        assert time.monotonic() < deadline, output
        time.sleep(0.05)


def test_tasks_of_one_key_are_invisible_to_another(client: TestClient, tmp_path: Path) -> None:
    task_id = _submit(client, A, file_urls=[_audio(tmp_path)]).json()["output"]["task_id"]
    seen = client.get(f"/api/v1/tasks/{task_id}", headers=B).json()["output"]
    assert seen == {"task_id": task_id, "task_status": "UNKNOWN"}
    canceled = client.post(f"/api/v1/tasks/{task_id}/cancel", headers=B).json()["output"]
    assert canceled["task_status"] == "UNKNOWN"
    assert client.get("/api/v1/tasks", headers=B).json()["total"] == 0
    assert client.get("/api/v1/tasks", headers=A).json()["total"] == 1
    assert _wait(client, task_id)["task_status"] == "SUCCEEDED"  # B's cancel did nothing


def _vocabulary(client: TestClient, headers: dict[str, str], action: str, **fields: Any) -> Any:
    return client.post(CUSTOMIZATION, json={"input": {"action": action, **fields}}, headers=headers)


def test_vocabularies_of_one_key_are_invisible_to_another(client: TestClient, tmp_path: Path) -> None:
    created = _vocabulary(
        client, A, "create_vocabulary", target_model="fun-asr", prefix="a", vocabulary=[{"text": "Xylantrix"}]
    )
    vocabulary_id = created.json()["output"]["vocabulary_id"]
    for action, extra in (
        ("query_vocabulary", {}),
        ("update_vocabulary", {"vocabulary": [{"text": "Stolen"}]}),
        ("delete_vocabulary", {}),
    ):
        refused = _vocabulary(client, B, action, vocabulary_id=vocabulary_id, **extra)
        assert refused.status_code == 400 and "does not exist" in refused.json()["message"], action
    assert _vocabulary(client, B, "list_vocabulary").json()["output"]["vocabulary_list"] == []
    # B cannot have its jobs or synchronous calls biased by A's vocabulary either
    job = client.post(
        SUBMIT,
        json={
            "model": "fun-asr",
            "input": {"file_urls": [_audio(tmp_path)]},
            "parameters": {"vocabulary_id": vocabulary_id},
        },
        headers=B,
    )
    assert job.status_code == 400 and "vocabulary_id" in job.json()["message"]
    sync = client.post(
        GENERATION,
        json={
            "model": "fun-asr-flash",
            "input": {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": _audio(tmp_path)}}]}
                ]
            },
            "parameters": {"vocabulary_id": vocabulary_id},
        },
        headers=B,
    )
    assert sync.status_code == 400 and "vocabulary_id" in sync.json()["message"]
    # ... nor its real-time streams (run-task over the WebSocket)
    with client.websocket_connect("/api-ws/v1/inference", headers=B) as ws:
        ws.send_json(
            {
                "header": {"action": "run-task", "task_id": "t-b", "streaming": "duplex"},
                "payload": {
                    "model": "fun-asr-realtime",
                    "task": "asr",
                    "parameters": {"format": "pcm", "sample_rate": 16000, "vocabulary_id": vocabulary_id},
                    "input": {},
                },
            }
        )
        failed = ws.receive_json()["header"]
        assert failed["event"] == "task-failed" and "vocabulary_id" in failed["error_message"]
    # A's vocabulary is untouched and applies to A's jobs
    items = _vocabulary(client, A, "query_vocabulary", vocabulary_id=vocabulary_id).json()["output"]["vocabulary"]
    assert [i["text"] for i in items] == ["Xylantrix"]
    own = client.post(
        SUBMIT,
        json={
            "model": "fun-asr",
            "input": {"file_urls": [_audio(tmp_path)]},
            "parameters": {"vocabulary_id": vocabulary_id},
        },
        headers=A,
    )
    assert _wait(client, own.json()["output"]["task_id"])["task_status"] == "SUCCEEDED"
    assert client.app.state.services.recognizer.hotwords == [["Xylantrix"]]  # type: ignore[attr-defined]


def _upload(client: TestClient, headers: dict[str, str]) -> str:
    policy = client.get("/api/v1/uploads", params={"action": "getPolicy", "model": "fun-asr"}, headers=headers)
    data = policy.json()["data"]
    key = data["upload_dir"] + "/clip.wav"
    form = {"OSSAccessKeyId": data["oss_access_key_id"], "Signature": data["signature"], "policy": data["policy"]}
    uploaded = client.post("/api/v1/uploads", data=form | {"key": key}, files={"file": ("clip.wav", b"RIFF0000WAVE")})
    assert uploaded.status_code == 204, uploaded.text
    return f"oss://{key}"


def test_uploads_of_one_key_are_unusable_by_another(client: TestClient) -> None:
    url = _upload(client, A)
    job = _submit(client, B, file_urls=[url])
    assert job.status_code == 400 and "input.file_urls[0]" in job.json()["message"]
    single = client.post(SUBMIT, json={"model": "qwen3-asr-flash-filetrans", "input": {"file_url": url}}, headers=B)
    assert single.status_code == 400 and "input.file_url" in single.json()["message"]
    sync = client.post(
        GENERATION,
        json={"model": "qwen3-asr-flash", "input": {"messages": [{"role": "user", "content": [{"audio": url}]}]}},
        headers=B,
    )
    assert sync.status_code == 400 and "does not exist" in sync.json()["message"]
    own = _submit(client, A, file_urls=[url])
    assert own.status_code == 200
    assert _wait(client, own.json()["output"]["task_id"])["task_status"] == "SUCCEEDED"


def test_stopping_the_app_puts_a_running_file_back_uncounted(tmp_path: Path) -> None:
    """The lifespan's close releases the file being recognized: a restart is not a failed attempt."""
    settings = Settings(data_dir=tmp_path / "data", api_keys=KEY_A, fetch_allow_file=True, submit_rps=0, query_rps=0)
    recognizer = FakeRecognizer()
    recognizer.block = True
    services = Services(settings=settings, catalog=Catalog(), recognizer=recognizer, rate_limiter=RateLimiter())  # type: ignore[arg-type]
    try:
        with TestClient(create_app(settings, services)) as client:
            task_id = _submit(client, A, file_urls=[_audio(tmp_path)]).json()["output"]["task_id"]
            assert recognizer.started.wait(10)
        store = JobStore(settings.resolved_database_url())
        task = store.get_task(task_id)
        assert task is not None and task.status == "PENDING"
        assert [(f.status, f.attempts) for f in task.files] == [("PENDING", 0)]
    finally:
        recognizer.release.set()
