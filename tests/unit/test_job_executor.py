"""Job executor and parameter logic with a fake recognizer (protocol logic only; the real engine runs in
tests/integration/test_file_jobs.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text

from voxgate.config import Settings
from voxgate.engine.catalog import Catalog
from voxgate.engine.types import AudioInfo, FileResult, Hotword, Sentence, Transcript
from voxgate.errors import InvalidParameter, Throttling
from voxgate.jobs.executor import JobExecutor
from voxgate.jobs.params import parse_job_parameters
from voxgate.jobs.store import (
    CANCELED,
    FAILED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    TOO_MANY_ATTEMPTS,
    JobStore,
)


class FakeRecognizer:
    """Returns a fixed one-sentence transcript per file and records which files it was given."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.block = False

    def transcribe_file(self, source: Path, options: Any, profile: Any, **kwargs: Any) -> FileResult:
        self.calls.append(Path(source).name)
        if self.block:
            self.started.set()
            self.release.wait(10)
        sentence = Sentence(0, 1000, f"text of {Path(source).name}")
        transcript = Transcript(0, [sentence], "en", 1000, 800)
        return FileResult(AudioInfo("wav", "pcm_s16le", 16000, 1, 1000), [transcript])


def _executor(tmp_path: Path, **settings: Any) -> tuple[JobExecutor, JobStore, FakeRecognizer]:
    config = Settings(data_dir=tmp_path, fetch_allow_file=True, **settings)
    store = JobStore(config.resolved_database_url())
    recognizer = FakeRecognizer()
    services = SimpleNamespace(
        settings=config, catalog=Catalog(), recognizer=recognizer, hotwords_for=lambda vocabulary_id, owner=None: []
    )
    return JobExecutor(store, services), store, recognizer  # type: ignore[arg-type]


def _files(tmp_path: Path, count: int) -> list[str]:
    urls = []
    for i in range(count):
        path = tmp_path / f"f{i}.wav"
        path.write_bytes(b"RIFF")
        urls.append(path.as_uri())
    return urls


def test_full_queue_is_throttling(tmp_path: Path) -> None:
    executor, store, _ = _executor(tmp_path, job_queue_limit=2)
    executor.check_capacity()
    for task_id in ("a", "b"):
        store.create_task(task_id, owner="o", model="fun-asr", family="fun-asr", parameters={}, file_urls=["x"])
    with pytest.raises(Throttling):
        executor.check_capacity()


def test_interrupted_task_resumes_only_unfinished_files(tmp_path: Path) -> None:
    executor, store, recognizer = _executor(tmp_path)
    store.create_task("t", owner="o", model="fun-asr", family="fun-asr", parameters={}, file_urls=_files(tmp_path, 3))
    assert store.claim_next() == "t"
    store.finish_file("t", 0, status=SUCCEEDED, duration_ms=1000, result=("tok0", str(tmp_path / "r0.json"), 1e12))
    store.start_file("t", 1)  # the process died here
    assert store.requeue_interrupted() == ["t"]
    task = store.get_task("t")
    assert task is not None and task.status == PENDING
    assert [f.status for f in task.files] == [SUCCEEDED, PENDING, PENDING]

    assert store.claim_next() == "t"
    executor.run_task("t")
    assert recognizer.calls == ["f1.wav", "f2.wav"]
    done = store.get_task("t")
    assert done is not None and done.status == SUCCEEDED and done.attempts == 2
    assert [f.status for f in done.files] == [SUCCEEDED] * 3
    assert all(f.result_token for f in done.files)


def test_cancel_while_running_stops_after_the_current_file(tmp_path: Path) -> None:
    executor, store, recognizer = _executor(tmp_path)
    store.create_task("t", owner="o", model="fun-asr", family="fun-asr", parameters={}, file_urls=_files(tmp_path, 3))
    recognizer.block = True
    assert store.claim_next() == "t"
    worker = threading.Thread(target=executor.run_task, args=("t",))
    worker.start()
    assert recognizer.started.wait(10)
    assert store.cancel_task("t") == RUNNING
    recognizer.release.set()
    worker.join(10)
    task = store.get_task("t")
    assert task is not None and task.status == CANCELED
    assert [f.status for f in task.files] == [SUCCEEDED, CANCELED, CANCELED]
    assert recognizer.calls == ["f0.wav"]


def test_pending_task_cancels_at_once(tmp_path: Path) -> None:
    _unused, store, _ = _executor(tmp_path)
    store.create_task("t", owner="o", model="fun-asr", family="fun-asr", parameters={}, file_urls=["x", "y"])
    assert store.cancel_task("t") == CANCELED
    assert store.claim_next() is None
    assert store.cancel_task("missing") is None


def test_parameters_map_to_recognition_options() -> None:
    parsed = parse_job_parameters(
        {
            "channel_id": [1, 0, 1],
            "language_hints": ["en", "zh-CN"],
            "asr_options": {"enable_itn": True, "language": "en"},
            "disfluency_removal_enabled": True,
            "diarization_enabled": True,
            "speaker_count": 3,
            "special_word_filter": '{"filter_with_signed": {"word_list": ["darn"]}, "system_reserved_filter": true}',
            "enable_words": False,
            "unknown_flag": 42,
        },
        "vocab-x-1",
    )
    options = parsed.options
    assert options.channels == [1, 0] and options.language_hints == ["en", "zh"] and options.language == "en"
    assert options.itn and options.disfluency_removal and options.diarization and options.speaker_count == 3
    assert options.special_word_filter == ["darn"]
    assert parsed.vocabulary_id == "vocab-x-1" and parsed.enable_words is False
    assert parse_job_parameters(None).options.channels == [0]
    assert parse_job_parameters({"special_word_filter": True}).options.special_word_filter == []


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"channel_id": [True]}, "parameters.channel_id"),
        ({"channel_id": [-1]}, "parameters.channel_id"),
        ({"language": 7}, "parameters.language"),
        ({"language_hints": ["english!"]}, "parameters.language_hints"),
        ({"asr_options": {"enable_itn": 1}}, "parameters.asr_options.enable_itn"),
        ({"speaker_count": 0}, "parameters.speaker_count"),
        ({"special_word_filter": 5}, "parameters.special_word_filter"),
        ({"timestamp_alignment_enabled": "on"}, "parameters.timestamp_alignment_enabled"),
        ({"enable_words": 1}, "parameters.enable_words"),
        ({"disfluency_removal_enabled": None, "diarization_enabled": "yes"}, "parameters.diarization_enabled"),
    ],
)
def test_bad_parameters_name_the_field(parameters: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_job_parameters(parameters)
    assert info.value.param == field and field in info.value.message


def test_vocabulary_lookup_follows_every_change(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'v.db'}")
    store.create_vocabulary(
        "vocab-a-1",
        owner="o",
        prefix="a",
        target_model="fun-asr",
        items=[{"text": "Xylantrix", "weight": 5, "lang": "en"}],
    )
    assert store.hotwords("vocab-a-1") == [Hotword("Xylantrix", 5, "en")]
    assert store.update_vocabulary("vocab-a-1", owner="o", items=[{"text": "Tolkarov", "weight": 2}])
    assert store.hotwords("vocab-a-1") == [Hotword("Tolkarov", 2, None)]
    assert not store.delete_vocabulary("vocab-a-1", owner="someone else")
    assert store.delete_vocabulary("vocab-a-1", owner="o")
    assert store.hotwords("vocab-a-1") is None


def test_file_that_keeps_crashing_the_server_fails_after_the_attempt_limit(tmp_path: Path) -> None:
    """Each round is one server life: start (requeue), claim, start the file, die. The third interruption
    of the same file fails it; the executor's next start settles the task without touching the file."""
    executor, store, recognizer = _executor(tmp_path, job_max_attempts=3)
    store.create_task("t", owner="o", model="fun-asr", family="fun-asr", parameters={}, file_urls=_files(tmp_path, 2))
    assert store.claim_next() == "t"
    store.finish_file("t", 0, status=SUCCEEDED, duration_ms=1000)
    for _life in range(3):
        store.requeue_interrupted(3)
        assert store.claim_next() == "t"
        store.start_file("t", 1)  # the process dies while recognizing file 1
    executor.start()
    try:
        deadline = time.monotonic() + 10
        while (task := store.get_task("t")) is not None and task.status not in TERMINAL:
            assert time.monotonic() < deadline, "the task never settled"
            time.sleep(0.05)
    finally:
        executor.stop()
    assert recognizer.calls == []
    assert task is not None and task.status == SUCCEEDED  # one file succeeded before the crashes
    assert [f.status for f in task.files] == [SUCCEEDED, FAILED]
    assert task.files[1].code == TOO_MANY_ATTEMPTS and "3 times" in (task.files[1].message or "")
    assert task.files[1].attempts == 3


def test_interrupted_file_below_the_limit_runs_again(tmp_path: Path) -> None:
    executor, store, recognizer = _executor(tmp_path, job_max_attempts=3)
    store.create_task("t", owner="o", model="fun-asr", family="fun-asr", parameters={}, file_urls=_files(tmp_path, 1))
    for _life in range(2):
        store.requeue_interrupted(3)
        assert store.claim_next() == "t"
        store.start_file("t", 0)
    store.requeue_interrupted(3)
    assert store.claim_next() == "t"
    executor.run_task("t")
    task = store.get_task("t")
    assert task is not None and task.status == SUCCEEDED and recognizer.calls == ["f0.wav"]


def test_single_file_task_that_keeps_crashing_fails_with_the_code(tmp_path: Path) -> None:
    executor, store, _ = _executor(tmp_path)
    store.create_task("t", owner="o", model="fun-asr", family="fun-asr", parameters={}, file_urls=_files(tmp_path, 1))
    for _life in range(3):
        store.requeue_interrupted()
        assert store.claim_next() == "t"
        store.start_file("t", 0)
    store.requeue_interrupted()
    assert store.claim_next() == "t"
    executor.run_task("t")
    task = store.get_task("t")
    assert task is not None and task.status == FAILED and task.code == TOO_MANY_ATTEMPTS


def test_database_from_before_attempt_counting_gains_the_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = JobStore(url)
    old.create_task("t", owner="o", model="fun-asr", family="fun-asr", parameters={}, file_urls=["x"])
    with old.engine.begin() as conn:
        conn.execute(text("ALTER TABLE task_files DROP COLUMN attempts"))
    old.close()
    store = JobStore(url)
    store.start_file("t", 0)
    task = store.get_task("t")
    assert task is not None and task.files[0].attempts == 1


def test_graceful_stop_does_not_count_as_an_attempt(tmp_path: Path) -> None:
    executor, store, recognizer = _executor(tmp_path, job_max_attempts=3)
    store.create_task("t", owner="o", model="fun-asr", family="fun-asr", parameters={}, file_urls=_files(tmp_path, 2))
    for _restart in range(5):  # five deploys while the second file is being recognized
        store.requeue_interrupted(3)
        assert store.claim_next() == "t"
        store.finish_file("t", 0, status=SUCCEEDED, duration_ms=1000)
        store.start_file("t", 1)
        assert store.release_running() == ["t"]
    task = store.get_task("t")
    assert task is not None and task.status == PENDING
    assert [(f.status, f.attempts) for f in task.files] == [(SUCCEEDED, 0), (PENDING, 0)]
    assert store.claim_next() == "t"
    executor.run_task("t")
    done = store.get_task("t")
    assert done is not None and done.status == SUCCEEDED and recognizer.calls == ["f1.wav"]


def test_result_files_no_task_holds_are_swept_once_old(tmp_path: Path) -> None:
    executor, store, _ = _executor(tmp_path)
    store.create_task("t", owner="o", model="fun-asr", family="fun-asr", parameters={}, file_urls=_files(tmp_path, 2))
    running = store.start_file("t", 0)  # being recognized: its token is held
    assert store.start_file("t", 0) == running, "a retry keeps the file's token"
    results = tmp_path / "results"
    results.mkdir()
    held = results / f"{running}.part"
    orphans = [results / "crash-leftover.json", results / "crash-leftover.part"]
    fresh = results / "just-written.json"
    for path in (held, *orphans, fresh):
        path.write_text("{}")
    hour_ago = time.time() - 2 * 3600
    for path in (held, *orphans):
        os.utime(path, (hour_ago, hour_ago))
    assert executor.cleanup() == 2
    assert sorted(p.name for p in results.iterdir()) == sorted([held.name, fresh.name])
