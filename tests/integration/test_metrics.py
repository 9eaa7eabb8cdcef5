"""``GET /metrics`` scraped around real traffic on a real server: counters and histograms move as they should.
Also the request id: returned on every response and written on the server's log lines."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import openai
import websocket
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, RunningServer, audio_file

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def scrape(server: RunningServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(server.url + "/metrics", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_move_with_real_traffic(server: RunningServer) -> None:
    assert httpx.get(server.url + "/metrics", timeout=10).status_code == 401
    before = scrape(server)
    assert value(before, "voxgate_model_loaded", model="whisper-base") == 1.0
    assert value(before, "voxgate_model_loaded", model="whisper-tiny.en") == 1.0

    client = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY)
    with audio_file("goforward.wav").open("rb") as audio:
        assert client.audio.transcriptions.create(model="whisper-1", file=audio).text
    httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer sk-wrong"}, timeout=10)
    submitted = httpx.post(
        server.url + "/api/v1/services/audio/asr/transcription",
        json={"model": "paraformer-v2", "input": {"file_urls": [audio_file("something.wav").as_uri()]}},
        headers={**AUTH, "X-DashScope-Async": "enable"},
        timeout=10,
    )
    task_id = submitted.json()["output"]["task_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.url}/api/v1/tasks/{task_id}", headers=AUTH, timeout=10).json()
        if status["output"]["task_status"] not in ("PENDING", "RUNNING"):
            break
        time.sleep(0.3)
    assert status["output"]["task_status"] == "SUCCEEDED", status

    after = scrape(server)
    transcribed = {"route": "/v1/audio/transcriptions", "method": "POST", "status": "200"}
    assert value(after, "voxgate_http_requests_total", **transcribed) == (
        value(before, "voxgate_http_requests_total", **transcribed) + 1
    )
    refused = {"route": "/v1/models", "method": "GET", "status": "401"}
    assert (
        value(after, "voxgate_http_requests_total", **refused)
        >= value(before, "voxgate_http_requests_total", **refused) + 1
    )
    polled = {"route": "/api/v1/tasks/{task_id}", "method": "GET", "status": "200"}
    assert value(after, "voxgate_http_requests_total", **polled) > value(
        before, "voxgate_http_requests_total", **polled
    )
    jobs_before = value(before, "voxgate_job_realtime_factor_count")
    assert value(after, "voxgate_job_realtime_factor_count") >= jobs_before + 1
    assert value(after, "voxgate_job_realtime_factor_sum") > value(before, "voxgate_job_realtime_factor_sum")
    assert ("voxgate_job_queue_depth", frozenset()) in after and value(after, "voxgate_job_queue_depth") == 0.0


def test_request_ids_reach_responses_and_logs(server: RunningServer) -> None:
    mine = httpx.get(server.url + "/v1/models", headers={**AUTH, "X-Request-Id": "trace-abc-123"}, timeout=10)
    assert mine.headers["x-request-id"] == "trace-abc-123"
    failed = httpx.get(server.url + "/api/v1/tasks/nope", headers={"Authorization": "Bearer sk-wrong"}, timeout=10)
    assert failed.json()["request_id"] == failed.headers["x-request-id"]
    ws = websocket.create_connection(
        server.ws_url + "/api-ws/v1/inference", header=[*[f"{k}: {v}" for k, v in AUTH.items()], "X-Request-Id: ws-77"]
    )
    assert ws.getheaders()["x-request-id"] == "ws-77"
    ws.close()
    try:
        websocket.create_connection(
            server.ws_url + "/api-ws/v1/inference", header=["Authorization: Bearer sk-wrong", "X-Request-Id: ws-78"]
        )
    except websocket.WebSocketBadStatusException as refused:
        assert refused.status_code == 401 and refused.resp_headers["x-request-id"] == "ws-78"
    else:
        raise AssertionError("a wrong key opened a WebSocket")
    deadline = time.monotonic() + 5
    while "[trace-abc-123]" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any("[trace-abc-123]" in line and "/v1/models" in line for line in server.log().splitlines())


def test_streamed_session_moves_session_and_lag_series(server: RunningServer) -> None:
    before = scrape(server)
    ws = websocket.create_connection(
        server.ws_url + "/api-ws/v1/inference", header=[f"Authorization: Bearer {API_KEY}"], timeout=60
    )
    header = {"action": "run-task", "task_id": uuid.uuid4().hex, "streaming": "duplex"}
    payload = {"task_group": "audio", "task": "asr", "function": "recognition", "model": "fun-asr-realtime"}
    parameters = {"format": "wav", "sample_rate": 16000}
    ws.send(json.dumps({"header": header, "payload": {**payload, "parameters": parameters, "input": {}}}))
    assert json.loads(ws.recv())["header"]["event"] == "task-started"
    during = scrape(server)
    assert value(during, "voxgate_realtime_sessions_open", protocol="run-task") >= 1
    audio = audio_file("goforward.wav").read_bytes()
    for i in range(0, len(audio), 3200):
        ws.send_binary(audio[i : i + 3200])
        time.sleep(0.02)
    ws.send(json.dumps({"header": {**header, "action": "finish-task"}, "payload": {"input": {}}}))
    while json.loads(ws.recv())["header"]["event"] not in ("task-finished", "task-failed"):
        pass
    ws.close()
    deadline = time.monotonic() + 5
    after = scrape(server)
    while value(after, "voxgate_realtime_sessions_open", protocol="run-task") and time.monotonic() < deadline:
        time.sleep(0.1)
        after = scrape(server)
    assert value(after, "voxgate_realtime_sessions_open", protocol="run-task") == 0
    lag = "voxgate_realtime_final_lag_seconds_count"
    assert value(after, lag, protocol="run-task") > value(before, lag, protocol="run-task")
    wait = "voxgate_decode_queue_wait_seconds_count"
    assert value(after, wait, work_class="final") > value(before, wait, work_class="final")  # via the scheduler
    assert ("voxgate_decode_queue_depth", frozenset({("work_class", "final")})) in after
    decodes = "voxgate_realtime_final_decodes_total"
    assert sum(value(after, decodes, path=p) - value(before, decodes, path=p) for p in ("fast", "retried", "full")) >= 1
