"""SIGKILL of the server during a file job and during vocabulary writes: after a restart on the same data
directory nothing acknowledged is lost and nothing is done twice."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY, RunningServer, audio_file, start_server, stop_server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
SUBMIT = "/api/v1/services/audio/asr/transcription"
CUSTOMIZATION = "/api/v1/services/audio/asr/customization"
FILES = ("beckett_16k.wav", "endgame_nagg_nell_16k.wav", "goforward.wav")
ENV = {"VOXGATE_SUBMIT_RPS": "0", "VOXGATE_QUERY_RPS": "0"}
KILLING_SERVER = Path(__file__).with_name("server_killed_while_writing.py")


def _kill(server: RunningServer) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=30)


def _task(server: RunningServer, task_id: str) -> dict[str, Any]:
    output: dict[str, Any] = httpx.get(f"{server.url}/api/v1/tasks/{task_id}", headers=AUTH, timeout=10).json()[
        "output"
    ]
    return output


def _submit(server: RunningServer, files: tuple[str, ...] = FILES) -> str:
    body = {
        "model": "fun-asr",
        "input": {"file_urls": [audio_file(name).as_uri() for name in files]},
        "parameters": {"language_hints": ["en"]},
    }
    response = httpx.post(server.url + SUBMIT, json=body, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["output"]["task_id"])


def _wait(server: RunningServer, task_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (output := _task(server, task_id))["task_status"] not in ("SUCCEEDED", "FAILED"):
        assert time.monotonic() < deadline, output
        time.sleep(0.5)
    return output


def _texts(output: dict[str, Any]) -> list[str]:
    texts = []
    for item in output["results"]:
        result = httpx.get(item["transcription_url"], timeout=10).json()
        texts.append(" ".join(t["text"] for t in result["transcripts"]))
    return texts


def test_sigkill_during_a_file_job(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data, ENV)
    try:
        task_id = _submit(server)
        deadline = time.monotonic() + 120
        while True:  # kill once the first file is done and the second is being recognized
            states = [r["subtask_status"] for r in _task(server, task_id).get("results", [])]
            if states[:2] == ["SUCCEEDED", "RUNNING"]:
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.05)
        before = _task(server, task_id)["results"][0]["transcription_url"]
    finally:
        _kill(server)
    server = start_server(data, ENV)
    try:
        done = _wait(server, task_id)
        assert done["task_status"] == "SUCCEEDED"
        assert [r["subtask_status"] for r in done["results"]] == ["SUCCEEDED"] * 3
        assert done["results"][0]["transcription_url"].rsplit("/", 1)[1] == before.rsplit("/", 1)[1], (
            "the file finished before the kill was not recognized again"
        )
        results = sorted(p.name for p in (data / "results").glob("*.json"))
        assert len(results) == 3, f"one result per file, no leftovers: {results}"
        assert not list((data / "results").glob("*.part"))
        # the file recognized again after the kill reads as it does without one
        assert _texts(done)[1] == _texts(_wait(server, _submit(server, FILES[1:2])))[0]
    finally:
        stop_server(server)


def _create(server: RunningServer, n: int) -> httpx.Response:
    body = {
        "input": {
            "action": "create_vocabulary",
            "target_model": "fun-asr",
            "prefix": "kill",
            "vocabulary": [{"text": f"Term{n}x{k}", "weight": 1 + k % 5} for k in range(40)],
        }
    }
    return httpx.post(server.url + CUSTOMIZATION, json=body, headers=AUTH, timeout=10)


def test_sigkill_during_vocabulary_writes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data, ENV)
    acknowledged: dict[str, int] = {}
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            try:
                response = _create(server, n)
            except httpx.HTTPError:
                return  # the server is gone
            if response.status_code == 200:
                acknowledged[response.json()["output"]["vocabulary_id"]] = n
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(acknowledged) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        _kill(server)
        stop.set()
        thread.join(30)
    server = start_server(data, ENV)
    try:
        listed: list[str] = []
        page = 0
        while True:
            body = {"input": {"action": "list_vocabulary", "prefix": "kill", "page_index": page, "page_size": 100}}
            found = httpx.post(server.url + CUSTOMIZATION, json=body, headers=AUTH, timeout=10).json()
            ids = [v["vocabulary_id"] for v in found["output"]["vocabulary_list"]]
            listed += ids
            if len(ids) < 100:
                break
            page += 1
        assert set(acknowledged) <= set(listed), "every acknowledged vocabulary survives"
        assert len(listed) <= len(acknowledged) + 1, "at most the one in flight at the kill is extra"
        for vocabulary_id in listed:
            query = {"input": {"action": "query_vocabulary", "vocabulary_id": vocabulary_id}}
            items = httpx.post(server.url + CUSTOMIZATION, json=query, headers=AUTH, timeout=10).json()["output"][
                "vocabulary"
            ]
            assert len(items) == 40, "no vocabulary is half written"
            if vocabulary_id in acknowledged:
                assert items[0]["text"] == f"Term{acknowledged[vocabulary_id]}x0"
    finally:
        stop_server(server)


@pytest.mark.parametrize("stage", ["before-rename", "after-rename"])
def test_sigkill_while_a_result_is_written(tmp_path: Path, stage: str) -> None:
    """The server dies exactly while writing the first file's result (whole ``.part`` not yet renamed, or the
    result in place but not yet recorded): after a restart the job completes with one result per file, no
    leftovers, and the same transcript as a job never interrupted."""
    data = tmp_path / "data"
    files = ("goforward.wav", "something.wav")
    killing = start_server(data, {**ENV, "KILL_AT_RESULT_STAGE": stage}, program=[str(KILLING_SERVER)])
    try:
        task_id = _submit(killing, files)
        killing.process.wait(timeout=120)  # it kills itself at the first result write
        assert killing.process.returncode == -signal.SIGKILL
        left = sorted(p.suffix for p in (data / "results").iterdir())
        assert left == ([".part"] if stage == "before-rename" else [".json"]), left
    finally:
        stop_server(killing)
    server = start_server(data, ENV)
    try:
        done = _wait(server, task_id)
        assert done["task_status"] == "SUCCEEDED"
        assert [r["subtask_status"] for r in done["results"]] == ["SUCCEEDED"] * 2
        names = sorted(p.name for p in (data / "results").iterdir())
        assert len(names) == 2 and all(n.endswith(".json") for n in names), f"one whole result per file: {names}"
        served = {r["transcription_url"].rsplit("/", 1)[1] for r in done["results"]}
        assert served == set(names), "the served results are exactly the files on disk"
        assert _texts(done) == _texts(_wait(server, _submit(server, files)))
    finally:
        stop_server(server)
