"""Two API nodes and a ``voxgate worker`` (celery backend) sharing one PostgreSQL database, one Redis and one data
directory, with nginx in front of the nodes running the reference config (deploy/nginx/voxgate.conf): what one
node creates or counts holds on the other, and the one public address serves real-time sessions and file jobs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dashscope
import httpx
import psycopg
import pytest
import websocket
from dashscope.audio.asr import Recognition, Transcription, VocabularyService
from dashscope.utils.oss_utils import OssUtils

from tests.cluster import postgres_database, redis_server
from tests.conftest import (
    API_KEY,
    REFERENCES,
    ROOT,
    RunningServer,
    audio_file,
    free_port,
    start_server,
    stop_server,
    wer,
)
from tests.integration.test_realtime_load import wait_for_open_sessions
from tests.integration.test_realtime_runtask import run_task_message
from tests.integration.test_scale_out import start_worker, stop_worker

NGINX_CONF = ROOT / "deploy" / "nginx" / "voxgate.conf"
BURST_KEY = "sk-burst-test"  # keys of their own for the rate-limit test (limits are per key)
CALM_KEY = "sk-calm-test"
SUBMIT_RPS = 1  # per key, across the nodes: a burst of one call, then one call per second
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WORKER = "w1@nodes"


@dataclass
class Cluster:
    a: RunningServer
    b: RunningServer
    public: str  # nginx
    access_log: Path
    database: str

    def block_workers(self, task_id: str) -> set[str | None]:
        """The workers that decoded the blocks of a task, from the store."""
        with psycopg.connect(self.database.replace("postgresql+psycopg://", "postgresql://")) as conn:
            return {row[0] for row in conn.execute("select worker from file_blocks where task_id = %s", (task_id,))}


@contextlib.contextmanager
def nginx(directory: Path, port: int, nodes: list[int]) -> Iterator[Path]:
    """The Debian nginx on 127.0.0.1:``port`` running deploy/nginx/voxgate.conf with only its listen address and
    node addresses replaced; everything it writes stays in ``directory``. Yields the access log."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        raise RuntimeError("nginx is required (make install installs it)")
    site = NGINX_CONF.read_text()
    for template, node in zip(("127.0.0.1:8001", "127.0.0.1:8002"), nodes, strict=True):
        assert template in site, f"{NGINX_CONF} no longer names {template}"
        site = site.replace(template, f"127.0.0.1:{node}")
    assert "listen 80;" in site
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    (directory / "voxgate.conf").write_text(site)
    access_log = directory / "access.log"
    temp = {name: directory / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    (directory / "nginx.conf").write_text(
        f"""
worker_processes 1;
daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format nodes '$request_method $uri $status $upstream_addr';
    access_log {access_log} nodes;
    {" ".join(f"{name}_temp_path {path};" for name, path in temp.items())}
    include {directory}/voxgate.conf;
}}
"""
    )
    args = [binary, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", str(directory / "error.log")]
    checked = subprocess.run([*args, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start:\n{(directory / 'error.log').read_text(errors='replace')}")
            time.sleep(0.1)
        yield access_log
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with postgres_database() as database, redis_server() as redis:
        shared = tmp_path_factory.mktemp("shared-data")
        ports = set()
        while len(ports) < 3:
            ports.add(free_port())
        public_port, port_a, port_b = sorted(ports)
        public = f"http://127.0.0.1:{public_port}"
        env = {
            "VOXGATE_DATABASE_URL": database,
            "VOXGATE_JOB_BACKEND": "celery",
            "VOXGATE_BROKER_URL": redis.url,
            "VOXGATE_REDIS_URL": redis.url.rsplit("/", 1)[0] + "/1",  # rate limits in a database of their own
            "VOXGATE_PUBLIC_URL": public,
            "VOXGATE_API_KEYS": f"{API_KEY},{BURST_KEY},{CALM_KEY}",
            "VOXGATE_SUBMIT_RPS": str(SUBMIT_RPS),
            "VOXGATE_DECODE_WORKERS": "1",
            "VOXGATE_REALTIME_CAPACITY": "0.85",  # two English streams (0.3 core-s/s each) per node
        }
        node_a = start_server(shared, env, port=port_a)  # the first node creates the tables
        with ThreadPoolExecutor(2) as pool:
            starting_b = pool.submit(start_server, shared, env, port_b)
            starting_worker = pool.submit(start_worker, WORKER, node_a.env, shared)
            node_b, worker = starting_b.result(), starting_worker.result()
        try:
            with nginx(tmp_path_factory.mktemp("nginx"), public_port, [port_a, port_b]) as access_log:
                yield Cluster(node_a, node_b, public, access_log, database)
        finally:
            stop_worker(worker)
            stop_server(node_b)
            stop_server(node_a)


def _use(monkeypatch: pytest.MonkeyPatch, base: str, key: str = API_KEY) -> None:
    """Point the dashscope SDK at ``base`` (a node or the public address)."""
    monkeypatch.setattr(dashscope, "api_key", key)
    monkeypatch.setattr(dashscope, "base_http_api_url", base + "/api/v1")
    monkeypatch.setattr(dashscope, "base_websocket_api_url", base.replace("http://", "ws://") + "/api-ws/v1/inference")


def _recognize(name: str, **parameters: str) -> tuple[bool, str]:
    """One real-time run-task session (English) over the dashscope SDK: (succeeded, text of all sentences or the
    error)."""
    result = Recognition(
        model="fun-asr-realtime", format="wav", sample_rate=16000, callback=None, language_hints=["en"], **parameters
    ).call(str(audio_file(name)))
    if result.status_code != 200:
        return False, f"{result.code}: {result.message}"
    return True, " ".join(s["text"] for s in result.get_sentence() or [])


def test_vocabulary_created_on_one_node_applies_on_the_other(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, cluster.a.url)
    service = VocabularyService()
    vocabulary_id = service.create_vocabulary(
        target_model="fun-asr", prefix="nodes", vocabulary=[{"text": "Forwerd", "weight": 5}]
    )
    _use(monkeypatch, cluster.b.url)
    ok, text = _recognize("goforward.wav", vocabulary_id=vocabulary_id)
    assert ok and "Forwerd" in text, text  # the term replaced "forward" on node B

    _use(monkeypatch, cluster.a.url)
    service.update_vocabulary(vocabulary_id, [{"text": "Meterz", "weight": 5}])
    _use(monkeypatch, cluster.b.url)
    ok, text = _recognize("goforward.wav", vocabulary_id=vocabulary_id)
    assert ok and "Meterz" in text and "Forwerd" not in text, text  # B sees A's update at once

    _use(monkeypatch, cluster.a.url)
    service.delete_vocabulary(vocabulary_id)
    _use(monkeypatch, cluster.b.url)
    ok, error = _recognize("goforward.wav", vocabulary_id=vocabulary_id)
    assert not ok and error.startswith("InvalidParameter") and "does not exist" in error, error  # deleted via A


def test_rate_limit_holds_across_both_nodes(cluster: Cluster) -> None:
    headers = {"Authorization": f"Bearer {BURST_KEY}"}
    with httpx.Client(timeout=30, headers=headers) as client:

        def issue(node: RunningServer) -> httpx.Response:
            return client.post(node.url + "/api/v1/tokens")

        assert issue(cluster.a).status_code == 200  # the burst of this key, spent on node A
        refused = issue(cluster.b)  # node B has not seen this key yet, but the bucket is shared
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "Throttling" and f"{SUBMIT_RPS:g}/s for submit" in refused.json()["message"]
        assert issue(cluster.a).status_code == 429
        time.sleep(1.2 / SUBMIT_RPS)  # one token back
        assert issue(cluster.b).status_code == 200
    calm = {"Authorization": f"Bearer {CALM_KEY}"}  # another key's bucket is untouched
    assert httpx.post(cluster.b.url + "/api/v1/tokens", headers=calm, timeout=30).status_code == 200


def test_upload_policy_and_temporary_key_from_one_node_work_on_the_other(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = httpx.get(
        cluster.a.url + "/api/v1/uploads", params={"action": "getPolicy", "model": "qwen3-asr-flash"}, headers=AUTH
    ).json()["data"]
    assert policy["upload_host"] == cluster.public + "/api/v1/uploads"
    key = policy["upload_dir"] + "/something.wav"
    form = {
        "OSSAccessKeyId": policy["oss_access_key_id"],
        "Signature": policy["signature"],
        "policy": policy["policy"],
        "key": key,
        "x-oss-forbid-overwrite": "true",
        "success_action_status": "200",
    }
    audio = audio_file("something.wav")
    uploaded = httpx.post(  # signed by node A, accepted by node B
        cluster.b.url + "/api/v1/uploads", data=form, files={"file": ("something.wav", audio.read_bytes())}, timeout=30
    )
    assert uploaded.status_code == 200, uploaded.text
    forged = httpx.post(
        cluster.b.url + "/api/v1/uploads",
        data={**form, "key": policy["upload_dir"] + "/x.wav", "Signature": "AAAA"},
        files={"file": ("x.wav", b"RIFF")},
        timeout=30,
    )
    assert forged.status_code == 403

    token = httpx.post(cluster.a.url + "/api/v1/tokens", headers=AUTH, timeout=30).json()["token"]
    _use(monkeypatch, cluster.a.url, key=token)  # the file uploaded through B, recognized on A with A's token...
    response = dashscope.MultiModalConversation.call(
        model="qwen3-asr-flash",
        messages=[{"role": "user", "content": [{"audio": f"oss://{key}"}]}],
        asr_options={"language": "en"},
    )
    assert response.status_code == 200, response
    assert wer(REFERENCES["something.wav"], response.output.choices[0].message.content[0]["text"]) <= 0.25
    on_b = httpx.get(  # ...and the token issued by A opens node B
        cluster.b.url + "/api/v1/uploads",
        params={"action": "getPolicy"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert on_b.status_code == 200, on_b.text
    tampered = httpx.get(
        cluster.b.url + "/api/v1/uploads",
        params={"action": "getPolicy"},
        headers={"Authorization": f"Bearer {token[:-2]}xx"},
        timeout=30,
    )
    assert tampered.status_code == 401


def test_one_public_address_through_nginx(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, cluster.public)
    ok, text = _recognize("beckett_16k.wav")
    assert ok, text
    assert wer(REFERENCES["beckett_16k.wav"], text) <= 0.25, text

    # a file job: the SDK uploads the local file through nginx (policy, streamed POST), submits and polls there
    url, _ = OssUtils.upload(model="fun-asr", file_path=str(audio_file("two_cities_16k.wav")), api_key=API_KEY)
    assert url.startswith("oss://")
    submitted = Transcription.async_call(model="fun-asr", file_urls=[url], language_hints=["en"])
    assert submitted.status_code == 200, submitted
    done = Transcription.wait(task=submitted.output.task_id)
    assert done.output["task_status"] == "SUCCEEDED", done.output
    result = httpx.get(done.output["results"][0]["transcription_url"], timeout=30)
    assert result.url.port == int(cluster.public.rsplit(":", 1)[1])  # result served through nginx too
    assert wer(REFERENCES["two_cities_16k.wav"], result.json()["transcripts"][0]["text"]) <= 0.15
    assert cluster.block_workers(submitted.output.task_id) == {WORKER}  # decoded by the worker, not an API node

    lines = [line.split() for line in cluster.access_log.read_text().splitlines()]
    assert ["GET", "/api-ws/v1/inference", "101"] in [line[:3] for line in lines]  # the WebSocket upgrade passed
    assert any(line[:3] == ["POST", "/api/v1/uploads", "200"] for line in lines)
    nodes = {line[3] for line in lines if len(line) > 3}
    assert nodes == {f"127.0.0.1:{cluster.a.port}", f"127.0.0.1:{cluster.b.port}"}, nodes  # both nodes served


def test_sessions_spread_over_the_nodes_and_admission_stays_per_node(cluster: Cluster) -> None:
    """Each node (VOXGATE_REALTIME_CAPACITY 0.85 core-s/s) admits two English streams priced 0.3 by its own
    measure; through nginx four sessions open, two on each node, and a fifth is refused."""
    url = cluster.public.replace("http://", "ws://") + "/api-ws/v1/inference"
    sessions: list[websocket.WebSocket] = []

    def open_session(n: int) -> dict[str, str]:
        ws = websocket.create_connection(url, header=[f"Authorization: Bearer {API_KEY}"], timeout=60)
        sessions.append(ws)
        ws.send(run_task_message(f"spread-{n}", language_hints=["en"]))
        header: dict[str, str] = json.loads(ws.recv())["header"]
        return header

    try:
        for n in range(4):
            started = open_session(n)
            assert started["event"] == "task-started", started
        for node in (cluster.a, cluster.b):
            wait_for_open_sessions(node, 2)  # 2 + 2: least_conn sent each new session to the emptier node
        refused = open_session(4)
        assert refused["event"] == "task-failed" and refused["error_code"] == "Throttling", refused
    finally:
        for ws in sessions:
            ws.close()
