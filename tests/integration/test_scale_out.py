"""The celery job backend at work: two API nodes and two ``voxgate worker`` processes on one real Redis broker
(append-only file on), one real PostgreSQL store and one shared data directory, all on loopback; the unmodified
dashscope SDK as client. The test that kills a whole worker node runs on its own broker and store, whose
workers hand a dead node's message on after a visibility timeout of seconds instead of the default hour.

To keep CPU cost down every process decodes with one CPU thread and ``fun-asr`` is served by the English tiny
model (a profile override, as an operator would set it); the result checks compare against the in-process
backend under the same settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dashscope
import httpx
import psutil
import psycopg
import pytest
from dashscope.audio.asr import Transcription

from tests.cluster import RedisServer, postgres_database, redis_server
from tests.conftest import API_KEY, REFERENCES, RunningServer, audio_file, join_wavs, start_server, stop_server, wer

ENGINE = {
    "VOXGATE_DECODE_WORKERS": "1",
    "VOXGATE_CPU_THREADS": "1",
    "VOXGATE_MODEL_PROFILES": json.dumps({"fun-asr": {"model": "whisper-tiny.en"}}),
}
WORKERS = ("w1@scale", "w2@scale")


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Cluster:
    a: RunningServer
    b: RunningServer
    workers: list[Worker]
    redis: RedisServer
    database: str

    def progress_ms(self, task_id: str) -> int:
        with psycopg.connect(self.database.replace("postgresql+psycopg://", "postgresql://")) as conn:
            row = conn.execute("select processed_ms from task_files where task_id = %s", (task_id,)).fetchone()
        return int(row[0]) if row else 0

    def blocks(self, task_id: str) -> list[tuple[int, int, str | None, int, str]]:
        return stored_blocks(self.database, task_id)


def stored_blocks(database: str, task_id: str) -> list[tuple[int, int, str | None, int, str]]:
    """(channel, block, worker, attempts, status) of a task's blocks, from the store."""
    with psycopg.connect(database.replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute(
            "select channel, block, worker, attempts, status from file_blocks where task_id = %s "
            "order by channel, block",
            (task_id,),
        ).fetchall()
    return [(int(r[0]), int(r[1]), r[2], int(r[3]), str(r[4])) for r in rows]


def start_worker(name: str, env: dict[str, str], directory: Path) -> Worker:
    log_path = directory / f"worker-{name.split('@')[0]}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "voxgate.cli", "worker", "--concurrency", "1", "--name", name],
        env=env,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = Worker(name, process, log_path)
    deadline = time.monotonic() + 120
    while f"{name} ready." not in worker.log():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker {name} did not start:\n{worker.log()}")
        time.sleep(0.2)
    return worker


def stop_worker(worker: Worker) -> None:
    """SIGTERM (warm shutdown: a running step finishes), then SIGKILL to the worker's whole session."""
    if worker.process.poll() is None:
        worker.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    shared = tmp_path_factory.mktemp("shared-data")  # the volume every node mounts
    with redis_server() as redis, postgres_database() as database:
        env = {
            **ENGINE,
            "VOXGATE_JOB_BACKEND": "celery",
            "VOXGATE_BROKER_URL": redis.url,
            "VOXGATE_DATABASE_URL": database,
        }
        a = start_server(shared, env)  # the first node creates the tables
        with ThreadPoolExecutor(3) as pool:
            node_b = pool.submit(start_server, shared, env)
            starting = [pool.submit(start_worker, name, a.env, shared) for name in WORKERS]
            b = node_b.result()
            workers = [w.result() for w in starting]
        try:
            yield Cluster(a, b, workers, redis, database)
        finally:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(stop_worker, workers))
                list(pool.map(stop_server, [a, b]))


def _use(node: RunningServer) -> None:
    dashscope.api_key = node.env["VOXGATE_API_KEYS"]
    dashscope.base_http_api_url = node.url + "/api/v1"


def _result(done: Any) -> dict[str, Any]:
    assert done.output["task_status"] == "SUCCEEDED", done.output
    url = done.output["results"][0]["transcription_url"]
    body: dict[str, Any] = httpx.get(url, timeout=30).json()
    return body


def test_ten_jobs_through_two_api_nodes_on_two_workers(cluster: Cluster) -> None:
    clips = [*REFERENCES] * 3
    clips = clips[:10]
    nodes = [cluster.a, cluster.b]
    submitted = []
    for i, clip in enumerate(clips):
        _use(nodes[i % 2])
        response = Transcription.async_call(model="fun-asr", file_urls=[audio_file(clip).as_uri()])
        assert response.status_code == 200, response
        submitted.append((response.output.task_id, clip))
    for i, (task_id, clip) in enumerate(submitted):
        _use(nodes[(i + 1) % 2])  # polled and fetched on the node that did not take it
        text = _result(Transcription.wait(task=task_id))["transcripts"][0]["text"]
        assert wer(REFERENCES[clip], text) <= 0.25, (clip, text)
    decoders = {}
    for task_id, _clip in submitted:
        blocks = cluster.blocks(task_id)
        assert blocks and all(status == "SUCCEEDED" for *_rest, status in blocks), blocks
        decoders.update({worker: task_id for _c, _b, worker, _a, _s in blocks})
    assert set(decoders) == set(WORKERS), decoders  # both workers took part


def _long_file(directory: Path) -> Path:
    """20.6 minutes of real read speech and pauses: three recordings five times over, 55 s of silence after each
    (6.8 minutes of speech)."""
    parts = [audio_file(n) for n in ("two_cities_16k.wav", "endgame_nagg_nell_16k.wav", "beckett_16k.wav")] * 5
    return join_wavs(parts, directory / "long.wav", pause_s=55.0)


def _decoding_now(worker: Worker) -> bool:
    """The worker's pool process is in the middle of a block: a block received and not finished, per its log."""
    log = worker.log()
    received = re.findall(r"Task voxgate\.decode_block\[([0-9a-f-]+)\] received", log)
    finished = set(re.findall(r"Task voxgate\.decode_block\[([0-9a-f-]+)\] (?:succeeded|raised)", log))
    return bool(received) and received[-1] not in finished


def _started(blocks: list[tuple[int, int, str | None, int, str]]) -> int:
    """Blocks being decoded now: started (counted in the store) and not yet stored. With one process per
    worker, as many as there are workers means every worker is inside a block, not between two."""
    return sum(1 for *_key, _worker, attempts, status in blocks if attempts >= 1 and status != "SUCCEEDED")


def test_long_file_spreads_over_both_workers_survives_a_killed_worker_and_matches_in_process(
    cluster: Cluster, tmp_path: Path
) -> None:
    long = _long_file(tmp_path)
    # the in-process backend, same settings, same file, at the same time (it decodes on one thread)
    alone = start_server(tmp_path / "in-process", ENGINE)
    try:
        _use(alone)
        reference_id = Transcription.async_call(
            model="fun-asr", file_urls=[long.as_uri()], diarization_enabled=True
        ).output.task_id

        _use(cluster.a)
        # speakers labelled: each block's embeddings are clustered once over the whole file at assembly
        task_id = Transcription.async_call(
            model="fun-asr", file_urls=[long.as_uri()], diarization_enabled=True
        ).output.task_id

        # kill -9 the pool process of the second worker while it decodes a block of this file
        victim = cluster.workers[1]
        deadline = time.monotonic() + 120
        while not (_decoding_now(victim) and _started(cluster.blocks(task_id)) == len(WORKERS)):
            assert time.monotonic() < deadline, victim.log()[-3000:]
            time.sleep(0.05)
        children = psutil.Process(victim.process.pid).children()
        assert len(children) == 1, children
        children[0].send_signal(signal.SIGKILL)

        _use(cluster.b)
        result = _result(Transcription.wait(task=task_id))
        _use(alone)
        reference = _result(Transcription.wait(task=reference_id))
    finally:
        stop_server(alone)

    assert "exited with 'signal 9 (SIGKILL)'" in victim.log()
    blocks = cluster.blocks(task_id)
    assert len(blocks) >= 9, blocks
    assert len({(c, b) for c, b, *_ in blocks}) == len(blocks)  # one row per block
    assert {worker for _c, _b, worker, _a, _s in blocks} == set(WORKERS), blocks
    assert max(attempts for _c, _b, _w, attempts, _s in blocks) >= 2, blocks  # the killed block ran again
    duration = result["properties"]["original_duration_in_milliseconds"]
    assert duration >= 20 * 60 * 1000
    text = result["transcripts"][0]["text"].lower()
    assert text.count("best of times") >= 4 and text.count("fail better") >= 4, text  # 5 of each were read
    speakers = {sentence.get("speaker_id") for sentence in result["transcripts"][0]["sentences"]}
    assert None not in speakers and len(speakers) >= 2, speakers
    assert result == reference


VISIBILITY_S = 15  # the broker visibility timeout of the node-loss cluster: above any one step's time here


@dataclass
class NodeLoss:
    """One API node and one worker node (the victim) on their own broker and store, with a short visibility
    timeout; more worker nodes start with ``node.env`` and ``directory``."""

    node: RunningServer
    victim: Worker
    database: str
    directory: Path

    def blocks(self, task_id: str) -> list[tuple[int, int, str | None, int, str]]:
        return stored_blocks(self.database, task_id)


@pytest.fixture
def node_loss(tmp_path: Path) -> Iterator[NodeLoss]:
    shared = tmp_path / "shared-data"
    with redis_server() as redis, postgres_database() as database:
        env = {
            **ENGINE,
            "VOXGATE_JOB_BACKEND": "celery",
            "VOXGATE_BROKER_URL": redis.url,
            "VOXGATE_DATABASE_URL": database,
            "VOXGATE_BROKER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
        }
        node = start_server(shared, env)
        victim = start_worker("victim@node-loss", node.env, shared)
        try:
            yield NodeLoss(node, victim, database, shared)
        finally:
            stop_worker(victim)
            stop_server(node)


def _received_at(worker: Worker, message_id: str) -> list[datetime]:
    """When the worker's log says it received the message ``message_id``."""
    pattern = rf"^(\S+ \S+) INFO celery\.worker\.strategy \[-\] Task \S+\[{message_id}\] received"
    return [datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f") for t in re.findall(pattern, worker.log(), re.M)]


def _finished(task_id: str, timeout_s: float) -> Any:
    """Poll a task until it ends (the SDK's ``wait`` has no time limit)."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = Transcription.fetch(task=task_id)
        if done.output["task_status"] not in ("PENDING", "RUNNING"):
            return done
        assert time.monotonic() < deadline, done.output
        time.sleep(0.5)


def test_a_killed_worker_node_block_is_redelivered_after_the_visibility_timeout(
    node_loss: NodeLoss, tmp_path: Path
) -> None:
    """The whole victim node (celery master and pool process) is SIGKILLed while it decodes a block: nothing
    puts its message back at once; after the visibility timeout a worker node started afterwards takes it,
    and the job ends as the in-process backend's does."""
    # blocks of about 120 s, each with a 44-second reading in it
    audio = join_wavs([audio_file("two_cities_16k.wav")] * 2, tmp_path / "two-blocks.wav", pause_s=80.0)
    alone = start_server(tmp_path / "in-process", ENGINE)
    survivor = None
    try:
        _use(alone)
        reference_id = Transcription.async_call(model="fun-asr", file_urls=[audio.as_uri()]).output.task_id
        _use(node_loss.node)
        task_id = Transcription.async_call(model="fun-asr", file_urls=[audio.as_uri()]).output.task_id

        # the victim plans the file (it is the only worker), then takes the first block: kill the node then
        victim = node_loss.victim
        deadline = time.monotonic() + 90
        while not (_decoding_now(victim) and any(a == 1 for *_rest, a, _s in node_loss.blocks(task_id))):
            assert time.monotonic() < deadline, victim.log()[-3000:]
            time.sleep(0.05)
        node = [psutil.Process(victim.process.pid), *psutil.Process(victim.process.pid).children(recursive=True)]
        assert len(node) == 2, node  # the master and its one pool process
        held_message = re.findall(r"Task voxgate\.decode_block\[([0-9a-f-]+)\] received", victim.log())[-1]
        os.killpg(victim.process.pid, signal.SIGKILL)
        _gone, alive = psutil.wait_procs(node, timeout=10)
        assert not alive, alive
        held = [(c, b) for c, b, _w, attempts, status in node_loss.blocks(task_id) if attempts == 1]
        assert len(held) == 1 and all(s == "PENDING" for *_r, s in node_loss.blocks(task_id)), node_loss.blocks(task_id)

        survivor = start_worker("survivor@node-loss", node_loss.node.env, node_loss.directory)
        result = _result(_finished(task_id, timeout_s=90))
        _use(alone)
        reference = _result(_finished(reference_id, timeout_s=90))
    finally:
        stop_server(alone)
        if survivor is not None:
            stop_worker(survivor)

    blocks = node_loss.blocks(task_id)
    assert len(blocks) >= 2, blocks  # a part-filled last window may go on into a block of its own
    assert all(worker == "survivor@node-loss" and status == "SUCCEEDED" for _c, _b, worker, _a, status in blocks)
    assert {(c, b): a for c, b, _w, a, _s in blocks}[held[0]] == 2, blocks  # the held block ran once more
    # the same message came back, and only once the visibility timeout had passed since the victim took it
    (taken,) = _received_at(victim, held_message)
    returned = _received_at(survivor, held_message)
    assert returned and (returned[0] - taken).total_seconds() >= VISIBILITY_S, (taken, returned)
    assert result["transcripts"][0]["text"].lower().count("best of times") == 2, result
    assert result == reference


def test_progress_and_cancel_across_nodes(cluster: Cluster, tmp_path: Path) -> None:
    long = _long_file(tmp_path)
    _use(cluster.a)
    task_id = Transcription.async_call(model="fun-asr", file_urls=[long.as_uri()]).output.task_id
    deadline = time.monotonic() + 90
    while cluster.progress_ms(task_id) == 0:  # decoded blocks count as progress in the shared store
        assert time.monotonic() < deadline
        time.sleep(0.1)
    answer = httpx.post(
        f"{cluster.b.url}/api/v1/tasks/{task_id}/cancel", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    _use(cluster.b)
    done = Transcription.wait(task=task_id)
    assert done.output["task_status"] == "CANCELED", done.output
    assert done.output["results"][0]["subtask_status"] == "CANCELED"
    blocks = cluster.blocks(task_id)
    assert any(status != "SUCCEEDED" for *_rest, status in blocks) or len(blocks) < 9, blocks
    assert not (cluster.a.data_dir / "jobs" / task_id).exists()  # the blocks' audio is gone from shared storage


def _kill_pool_processes(cluster: Cluster) -> None:
    for worker in cluster.workers:
        for child in psutil.Process(worker.process.pid).children():
            child.send_signal(signal.SIGKILL)


def test_a_file_that_kills_its_workers_fails_after_the_attempt_limit(cluster: Cluster) -> None:
    _use(cluster.b)
    task_id = Transcription.async_call(
        model="fun-asr", file_urls=[audio_file("two_cities_16k.wav").as_uri()]
    ).output.task_id
    for attempt in (1, 2, 3):  # VOXGATE_JOB_MAX_ATTEMPTS (default 3) deaths
        deadline = time.monotonic() + 60
        while not any(a >= attempt and s != "SUCCEEDED" for _c, _b, _w, a, s in cluster.blocks(task_id)):
            assert time.monotonic() < deadline, cluster.blocks(task_id)
            time.sleep(0.02)
        _kill_pool_processes(cluster)  # the one decoding the block dies (the idle one too: harmless)
    done = Transcription.wait(task=task_id)
    assert done.output["task_status"] == "FAILED", done.output
    assert done.output["code"] == "InvalidFile.TooManyAttempts", done.output
    assert done.output["results"][0]["code"] == "InvalidFile.TooManyAttempts"
    assert "3 times" in done.output["results"][0]["message"]
    (_c, _b, worker, attempts, status), *_ = cluster.blocks(task_id)
    assert (worker, attempts, status) == (None, 4, "PENDING")


def test_queued_jobs_survive_a_broker_restart(cluster: Cluster) -> None:
    """With no worker running, jobs wait in Redis; Redis is killed (-9) and started again on its append-only
    file; the API nodes publish again, the workers come back and finish every job."""
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(stop_worker, cluster.workers))
    submitted = []
    for i, clip in enumerate(["goforward.wav", "something.wav", "beckett_16k.wav"]):
        _use([cluster.a, cluster.b][i % 2])
        submitted.append((Transcription.async_call(model="fun-asr", file_urls=[audio_file(clip).as_uri()]), clip))
    cluster.redis.stop(kill=True)
    cluster.redis.start()
    _use(cluster.b)  # the API node publishes again on a new connection
    submitted.append(
        (Transcription.async_call(model="fun-asr", file_urls=[audio_file("goforward.wav").as_uri()]), "goforward.wav")
    )
    directory = cluster.workers[0].log_path.parent
    with ThreadPoolExecutor(2) as pool:
        cluster.workers[:] = pool.map(lambda name: start_worker(name, cluster.a.env, directory), WORKERS)
    for response, clip in submitted:
        text = _result(Transcription.wait(task=response.output.task_id))["transcripts"][0]["text"]
        assert wer(REFERENCES[clip], text) <= 0.25, (clip, text)


def test_jobs_go_on_when_the_api_node_that_took_them_is_killed(cluster: Cluster) -> None:
    """API nodes hold no job state: jobs submitted to node A finish after A is SIGKILLed, and node B serves
    their status and results. (Last in the module: node A stays down.)"""
    _use(cluster.a)
    submitted = [
        (Transcription.async_call(model="fun-asr", file_urls=[audio_file(clip).as_uri()]), clip)
        for clip in ("goforward.wav", "beckett_16k.wav")
    ]
    assert all(response.status_code == 200 for response, _clip in submitted), submitted
    cluster.a.process.send_signal(signal.SIGKILL)
    cluster.a.process.wait(timeout=30)
    _use(cluster.b)
    for response, clip in submitted:
        text = _result(Transcription.wait(task=response.output.task_id))["transcripts"][0]["text"]
        assert wer(REFERENCES[clip], text) <= 0.25, (clip, text)
