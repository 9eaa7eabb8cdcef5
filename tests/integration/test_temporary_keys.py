"""Temporary API keys against a real server: HTTP (httpx), run-task WebSocket (websocket-client) and the
dashscope SDK accept them until they expire, then answer InvalidApiKey."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import dashscope
import httpx
import pytest
import websocket
from dashscope.audio.asr import Recognition

from tests.conftest import API_KEY, RunningServer, audio_file, wer

TOKENS = "/api/v1/tokens"
GO = "go forward ten meters"


def _issue(server: RunningServer, lifetime: int | None = None, key: str = API_KEY) -> httpx.Response:
    params = {} if lifetime is None else {"expire_in_seconds": lifetime}
    return httpx.post(server.url + TOKENS, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def _token(server: RunningServer, lifetime: int) -> str:
    response = _issue(server, lifetime)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def _run_task(server: RunningServer, key: str) -> list[dict[str, Any]]:
    ws = websocket.create_connection(
        server.ws_url + "/api-ws/v1/inference", header=[f"Authorization: Bearer {key}"], timeout=60
    )
    task_id = uuid.uuid4().hex
    params = {"format": "wav", "sample_rate": 16000}
    header = {"action": "run-task", "task_id": task_id, "streaming": "duplex"}
    payload = {"task_group": "audio", "task": "asr", "function": "recognition", "model": "fun-asr-realtime"}
    ws.send(json.dumps({"header": header, "payload": {**payload, "parameters": params, "input": {}}}))
    audio = audio_file("goforward.wav").read_bytes()
    for i in range(0, len(audio), 6400):
        ws.send_binary(audio[i : i + 6400])
    ws.send(json.dumps({"header": {**header, "action": "finish-task"}, "payload": {"input": {}}}))
    events = []
    while not events or events[-1]["header"]["event"] not in ("task-finished", "task-failed"):
        events.append(json.loads(ws.recv()))
    ws.close()
    return events


def _realtime(server: RunningServer, key: str) -> websocket.WebSocket:
    return websocket.create_connection(
        server.ws_url + "/api-ws/v1/realtime?model=qwen3-asr-flash-realtime",
        header=[f"Authorization: Bearer {key}"],
        timeout=30,
    )


def test_token_shape_and_lifetime(server: RunningServer) -> None:
    before = time.time()
    body = _issue(server).json()
    assert set(body) == {"token", "expires_at"} and body["token"].startswith("st-")
    assert isinstance(body["expires_at"], int) and before + 59 <= body["expires_at"] <= time.time() + 61
    assert API_KEY not in body["token"]
    longest = _issue(server, 1800).json()["expires_at"]
    assert before + 1799 <= longest <= time.time() + 1801


@pytest.mark.parametrize("lifetime", [0, 1801, -3])
def test_lifetime_out_of_range_is_invalid_parameter(server: RunningServer, lifetime: int) -> None:
    response = _issue(server, lifetime)
    assert response.status_code == 400
    assert response.json()["code"] == "InvalidParameter" and "expire_in_seconds" in response.json()["message"]


def test_tokens_need_a_permanent_key(server: RunningServer) -> None:
    assert _issue(server, key="sk-wrong").json()["code"] == "InvalidApiKey"
    token = _token(server, 30)
    refused = _issue(server, key=token)
    assert refused.status_code == 403 and refused.json()["code"] == "AccessDenied"


def test_token_works_on_http_websocket_and_sdk_until_it_expires(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = _token(server, 120)
    auth = {"Authorization": f"Bearer {token}"}
    # HTTP: a file job submitted with the permanent key is the token holder's too (same identity)
    submitted = httpx.post(
        server.url + "/api/v1/services/audio/asr/transcription",
        json={"model": "paraformer-v2", "input": {"file_urls": [audio_file("goforward.wav").as_uri()]}},
        headers={"Authorization": f"Bearer {API_KEY}", "X-DashScope-Async": "enable"},
        timeout=10,
    )
    task_id = submitted.json()["output"]["task_id"]
    queried = httpx.get(f"{server.url}/api/v1/tasks/{task_id}", headers=auth, timeout=10)
    assert queried.status_code == 200 and queried.json()["output"]["task_id"] == task_id
    # WebSocket, raw client
    events = _run_task(server, token)
    assert events[-1]["header"]["event"] == "task-finished", events[-1]
    text = " ".join(
        e["payload"]["output"]["sentence"]["text"]
        for e in events
        if e["header"]["event"] == "result-generated" and e["payload"]["output"]["sentence"]["end_time"] is not None
    )
    assert wer(GO, text) <= 0.25, text
    # the session-protocol WebSocket
    assert json.loads(_realtime(server, token).recv())["type"] == "session.created"
    # the OpenAI Realtime WebSocket, the token in the subprotocol browsers use
    openai_ws = websocket.create_connection(
        server.ws_url + "/v1/realtime?intent=transcription",
        subprotocols=["realtime", f"openai-insecure-api-key.{token}"],
        timeout=30,
    )
    assert json.loads(openai_ws.recv())["type"] in ("session.created", "transcription_session.created")
    openai_ws.close()
    # the official SDK, with the token as its api_key
    monkeypatch.setattr(dashscope, "base_websocket_api_url", server.ws_url + "/api-ws/v1/inference")
    monkeypatch.setattr(dashscope, "api_key", token)
    result = Recognition(model="paraformer-realtime-v2", format="wav", sample_rate=16000, callback=None).call(
        str(audio_file("goforward.wav"))
    )
    assert result.status_code == 200, result.message
    assert wer(GO, " ".join(s["text"] for s in result.get_sentence())) <= 0.25

    short = _token(server, 1)
    assert httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {short}"}).status_code == 200
    time.sleep(2.1)
    expired = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {short}"})
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "InvalidApiKey"
    assert "expired" in expired.json()["error"]["message"]
    dashscope_shape = httpx.get(f"{server.url}/api/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {short}"})
    assert dashscope_shape.status_code == 401 and dashscope_shape.json()["code"] == "InvalidApiKey"
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        _run_task(server, short)
    assert info.value.status_code == 401
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        _realtime(server, short)
    assert info.value.status_code == 401
    monkeypatch.setattr(dashscope, "api_key", short)
    late = Recognition(model="paraformer-realtime-v2", format="wav", sample_rate=16000, callback=None).call(
        str(audio_file("goforward.wav"))
    )
    assert late.status_code != 200
