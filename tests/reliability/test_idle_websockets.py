"""200 idle WebSockets beside 4 live real-speech streams: the idle ones cost little memory, are closed by the
server after the default 60 s idle timeout (in each protocol's shape), and the live streams are unharmed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
import websocket

from tests.conftest import API_KEY, REFERENCES, RunningServer, start_server, stop_server, wer
from tests.integration.test_realtime_runtask import connect, finals, pcm_of, run_task
from tests.reliability.test_websocket_abuse import _closed_with

AUTH = [f"Authorization: Bearer {API_KEY}"]
IDLE = {"/api-ws/v1/inference": 100, "/api-ws/v1/realtime?model=qwen3-asr-flash-realtime": 50}
IDLE_OPENAI = 50
LIVE = 4
IDLE_TIMEOUT_S = 60  # the default (VOXGATE_REALTIME_IDLE_TIMEOUT_S)


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("idle") / "data")
    # four short streams first, so the models and every decode worker's buffers are in place before memory is
    # measured
    warm: dict[str, list[dict[str, Any]]] = {}
    threads = [threading.Thread(target=_live, args=(server, f"warm-{i}", warm, "beckett_16k.wav")) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    time.sleep(2)  # the memory of closed streams is given back once their last decode is done
    yield server
    stop_server(server)


def _live(
    server: RunningServer, name: str, out: dict[str, list[dict[str, Any]]], recording: str = "two_cities_16k.wav"
) -> None:
    ws = connect(server, timeout=180)
    try:  # real-time pace, 100 ms frames (the two_cities reading: 45 s)
        out[name] = run_task(ws, name, pcm_of(recording) + bytes(16000), pace=0.1, language_hints=["en"])
    finally:
        ws.close()


def _idle(url: str) -> websocket.WebSocket:
    return websocket.create_connection(url, header=AUTH, timeout=30)


@pytest.mark.timeout(400)
def test_two_hundred_idle_websockets_beside_four_live_streams(quiet_server: RunningServer) -> None:
    server = quiet_server
    process = psutil.Process(server.process.pid)
    before = process.memory_info().rss
    opened = time.monotonic()
    idle: list[tuple[str, websocket.WebSocket]] = []
    for path, count in IDLE.items():
        idle += [(path, _idle(server.ws_url + path)) for _ in range(count)]
    idle += [("openai", _idle(f"{server.ws_url}/v1/realtime?intent=transcription")) for _ in range(IDLE_OPENAI)]
    assert len(idle) == 200
    with_idle = process.memory_info().rss
    per_connection_kib = (with_idle - before) / 1024 / len(idle)
    assert per_connection_kib < 256, f"{per_connection_kib:.0f} KiB per idle connection"

    results: dict[str, list[dict[str, Any]]] = {}
    live = [threading.Thread(target=_live, args=(server, f"live-{i}", results)) for i in range(LIVE)]
    for thread in live:
        thread.start()
    peak = with_idle
    while any(t.is_alive() for t in live):
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.5)
    assert sorted(results) == [f"live-{i}" for i in range(LIVE)]
    for name, events in results.items():
        assert events[-1]["header"]["event"] == "task-finished", (name, events[-1])
        transcript = " ".join(s["text"] for s in finals(events))
        assert wer(REFERENCES["two_cities_16k.wav"], transcript) <= 0.15, (name, transcript)

    # every idle connection is closed by the server once 60 s pass without a message
    time.sleep(max(0.0, opened + IDLE_TIMEOUT_S + 5 - time.monotonic()))
    codes: dict[str, list[int | None]] = {}
    for kind, ws in idle:
        ws.settimeout(10)
        if kind != "/api-ws/v1/inference":  # session protocols: session.created, then an error event on timeout
            events = [json.loads(ws.recv()), json.loads(ws.recv())]
            assert events[0]["type"] == "session.created", events
            assert events[1]["type"] == "error" and "no client event for 60 seconds" in events[1]["error"]["message"]
        codes.setdefault(kind, []).append(_closed_with(ws))
        ws.close()
    assert {kind: set(c) for kind, c in codes.items()} == {kind: {1000} for kind in codes}, codes
    after = process.memory_info().rss
    print(
        f"idle: {per_connection_kib:.0f} KiB per connection; peak +{(peak - before) / 1024**2:.0f} MB; "
        f"after closing +{(after - before) / 1024**2:.0f} MB"
    )

    assert (peak - before) / 1024**2 < 600, f"peak {(peak - before) / 1024**2:.0f} MB over the idle server"
    assert (after - before) / 1024**2 < 200, "memory is given back once the connections are gone"
    connections = [c for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED]
    assert len(connections) < 10, f"{len(connections)} connections still open on the server"
    exported = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10).text
    still_open = [line for line in exported.splitlines() if line.startswith("voxgate_realtime_sessions_open{")]
    assert still_open and all(float(line.rsplit(" ", 1)[1]) == 0 for line in still_open), still_open
