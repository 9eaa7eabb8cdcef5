"""The store's bookkeeping for distributed file jobs (SQLite) and the block result encodings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxgate.engine.types import Sentence, Word
from voxgate.jobs.blocks import sentences_from_json, sentences_to_json, speakers_from_bytes, speakers_to_bytes
from voxgate.jobs.store import FAILED, RUNNING, SUCCEEDED, JobStore


def _store(tmp_path: Path) -> JobStore:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create_task("t1", owner="o", model="fun-asr", family="fun-asr", parameters={}, file_urls=["file:///a.wav"])
    return store


def test_a_block_is_registered_once_and_keeps_the_first_result(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.add_block("t1", 0, 0, 0, 0, 1_920_000) is False
    assert store.add_block("t1", 0, 0, 0, 0, 1_920_000) is False  # a redelivered plan: still one row
    first = store.start_block("t1", 0, 0, 0)
    second = store.start_block("t1", 0, 0, 0)  # delivered twice, decoded twice
    assert first is not None and second is not None and (first.attempts, second.attempts) == (1, 2)
    assert store.finish_block("t1", 0, 0, 0, worker="w1", sentences="[1]", speakers=None) is True
    assert store.finish_block("t1", 0, 0, 0, worker="w2", sentences="[2]", speakers=None) is False
    (row,) = store.blocks("t1", 0)
    assert (row.status, row.worker, row.sentences) == (SUCCEEDED, "w1", "[1]")
    assert store.add_block("t1", 0, 0, 0, 0, 1_920_000) is True  # known as decoded
    done = store.start_block("t1", 0, 0, 0)
    assert done is not None and done.attempts == 2  # a decoded block counts no further attempt
    assert store.decoded_samples("t1", 0) == (1, 1_920_000)
    store.drop_block_payloads("t1", 0)
    (row,) = store.blocks("t1", 0)
    assert (row.worker, row.sentences) == ("w1", None)


def test_plans_and_finishing_a_file_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.get_plan("t1", 0) is None
    store.save_plan("t1", 0, {"channels": {}}, blocks=0, complete=False)
    store.save_plan("t1", 0, {"channels": {"0": {"language": "en"}}}, blocks=3, complete=True)
    plan = store.get_plan("t1", 0)
    assert plan is not None and (plan.blocks, plan.complete, plan.plan["channels"]["0"]["language"]) == (3, True, "en")
    task = store.claim_task("t1")
    assert task is not None and task.status == RUNNING and task.attempts == 1
    again = store.claim_task("t1")
    assert again is not None and again.attempts == 1  # already running: claimed, not counted again
    token = store.start_file("t1", 0)
    assert (
        store.finish_file(
            "t1", 0, status=SUCCEEDED, duration_ms=5, result=(token, "/r.json", 9e12), only_unfinished=True
        )
        is True
    )
    # a second assembly changes nothing
    assert store.finish_file("t1", 0, status=FAILED, code="X", only_unfinished=True) is False
    view = store.get_task("t1")
    assert view is not None and view.files[0].status == SUCCEEDED and view.files[0].result_token == token
    assert store.result_path(token) == "/r.json"
    store.finish_task("t1", status=SUCCEEDED)
    assert store.claim_task("t1") is None


def test_block_results_round_trip_exactly() -> None:
    sentences = [
        Sentence(0, 900, "Hello, world.", [Word(0, 400, " Hello", ",", 0.123456789), Word(450, 900, " world", ".")]),
        Sentence(1200, 1500, "Again", [Word(1200, 1500, " Again", "", 0.5)], language="en", speaker_id=1),
    ]
    assert sentences_from_json(sentences_to_json(sentences)) == sentences
    spans = np.array([[0, 2000], [1000, 3000]], dtype=np.int64)
    embeddings = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    back_spans, back_embeddings = speakers_from_bytes(speakers_to_bytes(spans, embeddings))
    assert back_spans.dtype == np.int64 and np.array_equal(back_spans, spans)
    assert back_embeddings.dtype == np.float32 and np.array_equal(back_embeddings, embeddings)
